"""Every overlay, rendered by `kubectl kustomize`, against the Kubernetes schemas of 1.25 … 1.37
(kubernetes-validate, strict: unknown fields are errors; every release it ships) and the
kubernetes client's models; and each spec rendered for each of those releases
(``--kube-version``) against that release's schemas. 1.20–1.24: test_kube_versions.

HTTPRoute (Gateway API), ServiceMonitor and PrometheusRule (Prometheus Operator) are custom
resources: neither validator has a schema for them, so they are checked only for having been
rendered; everything else must validate.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes import client
from kubernetes_validate.utils import SchemaNotFoundError
from pydantic import ValidationError

from infership.k8s.kustomize import kustomize_files, write_tree
from infership.k8s.manifests import build_objects
from infership.k8s.spec import Autoscaling, DeploySpec, Resources
from infership.k8s.target import KubeTarget

VERSIONS = [f"1.{minor}" for minor in range(25, 38)]
CUSTOM_RESOURCES = {"HTTPRoute", "ServiceMonitor", "PrometheusRule"}
MODELS: dict[str, Any] = {
    "Namespace": client.V1Namespace,
    "ServiceAccount": client.V1ServiceAccount,
    "ConfigMap": client.V1ConfigMap,
    "Secret": client.V1Secret,
    "Deployment": client.V1Deployment,
    "Service": client.V1Service,
    "Ingress": client.V1Ingress,
    "HorizontalPodAutoscaler": client.V2HorizontalPodAutoscaler,
    "PodDisruptionBudget": client.V1PodDisruptionBudget,
    "NetworkPolicy": client.V1NetworkPolicy,
}
DIGEST = "sha256:" + "cd" * 32

# Between them, the specs produce every kind and every optional part of the pod.
SPECS = {
    "ingress-tls-keys": DeploySpec(
        name="classifier",
        namespace="ml",
        image=f"registry.example.com/ml/classifier:1@{DIGEST}",
        traffic="ingress",
        host="classify.example.com",
        tls_secret="classify-tls",
        api_keys_yaml="keys: []\n",
        model_key_secret="model-keys",
        allow_from_namespaces=("ingress-nginx",),
        autoscaling=Autoscaling(
            min_replicas=2, max_replicas=6, custom_metric="queue", custom_metric_target="50m"
        ),
    ),
    "gateway-gpu-monitoring": DeploySpec(
        name="embedder",
        namespace="search",
        image="localhost/embedder:2",
        traffic="gateway",
        gateway_namespace="gateways",
        resources=Resources(gpus=1),
        monitoring=True,
    ),
}


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        message = "kubectl is not installed: run .ci/setup.d/40-kubernetes.sh"
        if os.environ.get("INFERSHIP_CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """'<spec>/<overlay>' → the objects `kubectl kustomize` renders."""
    result = {}
    for name, spec in SPECS.items():
        root = tmp_path_factory.mktemp(name)
        write_tree(kustomize_files(spec), root)
        for overlay in ("dev", "prod"):
            text = subprocess.run(
                [kubectl(), "kustomize", str(root / "overlays" / overlay)],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
            result[f"{name}/{overlay}"] = list(yaml.safe_load_all(text))
    return result


def _strictly_valid(obj: dict[str, Any], version: str) -> bool:
    """True when valid, False when the kind has no schema; raises ValidationError otherwise."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except SchemaNotFoundError:
        return False
    return True


@pytest.mark.parametrize("version", VERSIONS)
def test_every_overlay_validates_strictly_against_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], version: str
) -> None:
    for overlay, objects in rendered.items():
        unchecked = {o["kind"] for o in objects if not _strictly_valid(o, version)}
        assert unchecked <= CUSTOM_RESOURCES, f"{overlay}: no schema for {unchecked}"


@pytest.mark.parametrize("version", VERSIONS)
def test_rendering_for_each_release_validates_against_its_schemas(version: str) -> None:
    for spec in SPECS.values():
        target = spec.model_copy(update={"kubernetes": KubeTarget.for_version(version)})
        unchecked = {o["kind"] for o in build_objects(target) if not _strictly_valid(o, version)}
        assert unchecked <= CUSTOM_RESOURCES, f"{version}: no schema for {unchecked}"


def test_every_overlay_validates_with_the_kubernetes_client_models(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    kinds = set()
    for objects in rendered.values():
        for obj in objects:
            kinds.add(obj["kind"])
            if obj["kind"] not in CUSTOM_RESOURCES:
                MODELS[obj["kind"]].model_validate(obj)
    assert kinds == set(MODELS) | CUSTOM_RESOURCES, "a spec no longer produces every kind"


def test_the_prod_overlay_renders_the_same_objects_as_build_objects(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    # `infership deploy` applies build_objects(spec); `kubectl apply -k` must get the same.
    for name, spec in SPECS.items():
        expected = {_key(o): o for o in build_objects(spec)}
        got = {_key(o): o for o in rendered[f"{name}/prod"]}
        assert got == expected, name


def test_the_dev_overlay_runs_one_unauthenticated_replica_in_its_own_namespace(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["ingress-tls-keys/dev"]
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["ConfigMap", "Deployment", "Namespace", "Service", "ServiceAccount"]
    assert {o["metadata"].get("namespace", o["metadata"]["name"]) for o in objects} == {
        "classifier-dev"
    }
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    [config] = [o for o in objects if o["kind"] == "ConfigMap"]
    assert deployment["spec"]["replicas"] == 1
    assert config["data"]["INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED"] == "true"
    assert "INFERSHIP_AUTH__KEYS_FILE" not in config["data"]
    pod = deployment["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "model-keys"]
    # The pinned digest is a prod decision; dev runs the tag.
    assert pod["containers"][0]["image"] == "registry.example.com/ml/classifier:1"


def test_a_misspelt_field_fails_both_validators(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    [deployment] = [o for o in rendered["ingress-tls-keys/prod"] if o["kind"] == "Deployment"]
    broken = copy.deepcopy(deployment)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicyy"] = container.pop("imagePullPolicy")
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicyy"):
        kubernetes_validate.validate(broken, "1.33", strict=True)
    with pytest.raises(ValidationError, match="imagePullPolicyy"):
        client.V1Deployment.model_validate(broken)


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def test_written_trees_render_from_any_working_directory(tmp_path: Path) -> None:
    # The overlays refer to the base by relative path only.
    write_tree(kustomize_files(SPECS["ingress-tls-keys"]), tmp_path / "a" / "b")
    subprocess.run(
        [kubectl(), "kustomize", "overlays/prod"],
        cwd=tmp_path / "a" / "b",
        check=True,
        capture_output=True,
        timeout=60,
    )
