"""A kustomize tree of a deployment: ``base/`` and the overlays ``dev`` and ``prod``.

    base/             what every environment runs: Namespace, ServiceAccount, ConfigMap,
                      keys Secret (when shipped), Deployment, Service, Ingress or HTTPRoute
    overlays/prod/    + HorizontalPodAutoscaler, PodDisruptionBudget, NetworkPolicy,
                      monitoring; TLS on the Ingress; the image pinned by digest
    overlays/dev/     namespace <name>-dev, one replica, a small CPU request, no API keys,
                      no outside traffic (kubectl port-forward)

``kubectl kustomize overlays/prod`` renders the same objects as ``build_objects(spec)``
(tests/k8s check it), so ``infership deploy`` and ``kubectl apply -k`` deploy the same thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infership.k8s.manifests import (
    KEYS_DIR,
    Obj,
    build_objects,
    config_checksum,
    server_environment,
    setting_env,
)
from infership.k8s.render import file_name, render_document
from infership.k8s.spec import DeploySpec

KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
PROD_ONLY = {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"}
MONITORING = {"PrometheusRule", "ServiceMonitor"}
DEV_CPU_REQUEST = "100m"


def kustomize_files(spec: DeploySpec) -> dict[str, str]:
    """Relative path → YAML text of the whole tree, in a stable order."""
    files = _base(spec)
    files.update(_prod(spec))
    files.update(_dev(spec))
    return files


def write_tree(files: dict[str, str], directory: Path) -> list[Path]:
    """Write ``files`` under ``directory``; returns the paths written."""
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _is_prod_only(obj: Obj, spec: DeploySpec) -> bool:
    if obj["kind"] in PROD_ONLY | MONITORING:
        return True
    # The monitoring dashboard is a ConfigMap too, told apart by name.
    return bool(obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == f"{spec.name}-dashboard")


def _base(spec: DeploySpec) -> dict[str, str]:
    name, tag, _ = spec.image_parts
    # The base names the image by tag; prod pins the digest with kustomize's `images:`.
    base_spec = spec.model_copy(
        update={"image": f"{name}:{tag}" if tag else name, "tls_secret": None}
    )
    objects = [o for o in build_objects(base_spec) if not _is_prod_only(o, spec)]
    return _kustomization("base", objects, spec.name, {})


def _prod(spec: DeploySpec) -> dict[str, str]:
    extra = [o for o in build_objects(spec) if _is_prod_only(o, spec)]
    fields: dict[str, Any] = {}
    patches = []
    if spec.tls_secret is not None:
        patches.append(
            _patch(
                "networking.k8s.io/v1",
                "Ingress",
                spec.name,
                {"spec": {"tls": [{"hosts": [spec.host], "secretName": spec.tls_secret}]}},
            )
        )
    name, _, digest = spec.image_parts
    if digest is not None:
        fields["images"] = [{"name": name, "digest": digest}]
    if patches:
        fields["patches"] = patches
    return _kustomization("overlays/prod", extra, spec.name, fields, base="../../base")


def _dev(spec: DeploySpec) -> dict[str, str]:
    dev_env = server_environment(spec.model_copy(update={"allow_unauthenticated": True}))
    template: Obj = {
        "metadata": {"annotations": {"infership.dev/config-sha256": config_checksum(dev_env)}},
        "spec": {
            "containers": [{"name": "server", "resources": {"requests": {"cpu": DEV_CPU_REQUEST}}}]
        },
    }
    patches = []
    if spec.keys_secret_name is not None:
        # No keys in dev: the server runs with INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED instead,
        # and the pod must not wait for a keys Secret that dev does not have.
        template["spec"]["containers"][0]["volumeMounts"] = [
            {"mountPath": KEYS_DIR, "$patch": "delete"}
        ]
        template["spec"]["volumes"] = [{"name": "api-keys", "$patch": "delete"}]
        patches.append(
            _patch(
                "v1",
                "ConfigMap",
                f"{spec.name}-config",
                {
                    "data": {
                        setting_env("auth", "keys_file"): None,
                        setting_env("auth", "allow_unauthenticated"): "true",
                    }
                },
            )
        )
        if spec.api_keys_yaml is not None:
            patches.append(_delete("v1", "Secret", f"{spec.name}-api-keys"))
    patches.insert(
        0,
        _patch("apps/v1", "Deployment", spec.name, {"spec": {"replicas": 1, "template": template}}),
    )
    for obj in build_objects(spec):
        if obj["kind"] in ("Ingress", "HTTPRoute"):
            patches.append(_delete(obj["apiVersion"], obj["kind"], obj["metadata"]["name"]))
    fields = {"namespace": f"{spec.name}-dev", "patches": patches}
    return _kustomization("overlays/dev", [], spec.name, fields, base="../../base")


def _kustomization(
    folder: str,
    objects: list[Obj],
    instance: str,
    fields: dict[str, Any],
    *,
    base: str | None = None,
) -> dict[str, str]:
    files = {f"{folder}/{file_name(o, instance)}": render_document(o) for o in objects}
    resources = ([base] if base else []) + [file_name(o, instance) for o in objects]
    kustomization = {**KUSTOMIZATION, **fields, "resources": resources}
    # kubectl users read the namespace and the resources first, then what changes them.
    order = ["apiVersion", "kind", "namespace", "resources", "images", "patches"]
    kustomization = {key: kustomization[key] for key in order if key in kustomization}
    return {f"{folder}/kustomization.yaml": render_document(kustomization), **files}


def _patch(api_version: str, kind: str, name: str, body: Obj) -> Obj:
    # Patches select their target by kind and name, so they keep matching after the overlay's
    # namespace transformer has moved the objects.
    document = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **body}
    return {"target": {"kind": kind, "name": name}, "patch": render_document(document)}


def _delete(api_version: str, kind: str, name: str) -> Obj:
    return _patch(api_version, kind, name, {"$patch": "delete"})
