"""Server-side apply of rendered objects, and their deletion.

Every object goes out as one ``PATCH`` with ``Content-Type: application/apply-patch+yaml``
and ``fieldManager=infership``: the API server creates what is missing, updates what differs
and records that infership owns those fields. A field that another manager has set since
(``kubectl apply --server-side``, a controller, another deploy tool) is a conflict, and
infership does not take it over silently: the deploy stops, naming each field and who holds
it, unless ``force_conflicts`` (``--force-conflicts``) says to take them. Conflicts with
infership's own managers (its rollbacks, the initial replica count) are always taken.

The kind of each object is looked up in the cluster's discovery, so custom resources
(HTTPRoute, ServiceMonitor) go through the same code, and a kind the cluster does not serve
fails before anything is sent, with a message that says what to install.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource

from infership.errors import DeployError
from infership.k8s.client import api_errors, status_message
from infership.k8s.cluster import FIELD_MANAGER
from infership.k8s.discovery import discover
from infership.k8s.target import KINDS, KubeTarget, served_by

__all__ = [
    "FIELD_MANAGER",
    "FieldConflict",
    "apply_objects",
    "delete_objects",
    "dynamic_client",
    "resource_for",
]


class FieldConflict(DeployError):
    """Server-side apply met fields that another field manager holds."""


_MANAGER = re.compile(r'conflict with "([^"]+)"')


# What each API group that a cluster may lack takes to install.
_INSTALL_HINTS = {
    "gateway.networking.k8s.io": (
        "install the Gateway API CRDs (https://gateway-api.sigs.k8s.io/guides/) and a "
        "Gateway controller, or use an Ingress instead of an HTTPRoute"
    ),
    "monitoring.coreos.com": (
        "install the Prometheus Operator's CRDs (kube-prometheus-stack), or leave the "
        "monitoring objects out"
    ),
}

_DYNAMIC_ATTRIBUTE = "_infership_dynamic_client"


def dynamic_client(api: client.ApiClient) -> DynamicClient:
    """A discovery-backed client for ``api``; discovery is read once per ApiClient.

    The kubernetes client would otherwise cache discovery in a shared file named after the
    server URL and trust it later, so a CRD removed since (or another server on a reused
    address) would look served. We keep the cache in memory only: its file lives in a
    folder removed at once, and failing to rewrite it later is ignored by the client.
    """
    cached = getattr(api, _DYNAMIC_ATTRIBUTE, None)
    if isinstance(cached, DynamicClient):
        return cached
    with api_errors(api, "discover", "the API groups"), tempfile.TemporaryDirectory() as tmp:
        dyn = DynamicClient(api, cache_file=os.path.join(tmp, "discovery.json"))  # type: ignore[no-untyped-call]
    # Kept on the ApiClient itself, so both go away together.
    setattr(api, _DYNAMIC_ATTRIBUTE, dyn)
    return dyn


def resource_for(
    dyn: DynamicClient, api_version: str, kind: str, target: KubeTarget | None = None
) -> Resource:
    """The served resource for ``api_version``/``kind``, or DeployError saying what serves it:
    which Kubernetes releases for a built-in kind, what to install for a custom resource.
    ``target``, when known, names the cluster's own version in the message."""
    try:
        resource: Resource = dyn.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError as exc:
        raise DeployError(_not_served(api_version, kind, target)) from exc
    return resource


def _not_served(api_version: str, kind: str, target: KubeTarget | None) -> str:
    where = f"the cluster ({target.label})" if target is not None else "the cluster"
    releases = served_by(api_version, kind)
    if releases is not None:
        served = ""
        if target is not None and kind in KINDS and target.served is not None:
            others = [s.api_version for s in KINDS[kind] if target.serves(s.api_version)]
            served = f" (it serves {', '.join(others)})" if others else ""
        return (
            f"{where} does not serve {kind} ({api_version}), a built-in kind of {releases}"
            f"{served}: render for the cluster's version (`infership deploy` does; "
            "`infership manifests --kube-version X.Y`)"
        )
    group = api_version.rpartition("/")[0]
    hint = _INSTALL_HINTS.get(group, "install the CRD that defines it")
    return f"{where} does not serve {kind} ({api_version}): {hint}"


def _describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


def apply_objects(
    api: client.ApiClient,
    objects: Sequence[dict[str, Any]],
    *,
    field_manager: str = FIELD_MANAGER,
    dry_run: bool = False,
    force_conflicts: bool = False,
) -> list[dict[str, Any]]:
    """Server-side apply each object in order; return what the server answered for each.

    ``dry_run`` sends ``dryRun=All``: the server validates, defaults and answers, and stores
    nothing. All kinds are resolved before the first write, so a missing CRD changes nothing.
    Raises FieldConflict when another field manager holds fields of an object, unless
    ``force_conflicts``; the objects before it stay applied.
    """
    dyn = dynamic_client(api)
    target = discover(api)
    resources = [resource_for(dyn, o["apiVersion"], o["kind"], target) for o in objects]
    applied: list[dict[str, Any]] = []
    for obj, resource in zip(objects, resources, strict=True):
        meta = obj.get("metadata", {})
        send = functools.partial(
            resource.server_side_apply,
            body=obj,
            name=meta["name"],
            namespace=meta.get("namespace") if resource.namespaced else None,
            field_manager=field_manager,
            dry_run="All" if dry_run else None,
        )
        with api_errors(api, "apply", _describe(obj)):
            try:
                try:
                    result = send(force_conflicts=force_conflicts)
                except ApiException as exc:
                    conflicts = _conflicts(exc)
                    if not conflicts:
                        raise
                    if any(not manager.startswith(FIELD_MANAGER) for manager, _ in conflicts):
                        raise FieldConflict(_conflict_message(obj, conflicts)) from exc
                    # Only infership's own managers (a rollback, the first replica count).
                    result = send(force_conflicts=True)
            except ApiException as exc:
                if exc.status in (401, 403):
                    raise
                raise DeployError(
                    f"the API server refused {_describe(obj)} ({exc.status}): {status_message(exc)}"
                ) from exc
        applied.append(result.to_dict())
    return applied


def _conflicts(exc: ApiException) -> list[tuple[str, str]]:
    """(manager, field) for each field-manager conflict a 409 reports; empty for other errors."""
    if exc.status != 409:
        return []
    try:
        causes = json.loads(exc.body or "{}").get("details", {}).get("causes", [])
    except (TypeError, ValueError, AttributeError):
        return []
    found = []
    for cause in causes if isinstance(causes, list) else []:
        if not isinstance(cause, dict) or cause.get("reason") != "FieldManagerConflict":
            continue
        manager = _MANAGER.search(str(cause.get("message", "")))
        found.append((manager.group(1) if manager else "?", str(cause.get("field", "?"))))
    return found


def _conflict_message(obj: dict[str, Any], conflicts: list[tuple[str, str]]) -> str:
    fields = "\n".join(f'  {field}  held by "{manager}"' for manager, field in conflicts)
    held = "a field" if len(conflicts) == 1 else f"{len(conflicts)} fields"
    return (
        f"{_describe(obj)}: {held} that infership sets changed under another field manager "
        f"since infership last applied it:\n{fields}\n"
        "infership does not take them over silently: undo that change, or rerun with "
        "--force-conflicts to take them back"
    )


def delete_objects(
    api: client.ApiClient, objects: Iterable[dict[str, Any]], *, missing_ok: bool = True
) -> None:
    """Delete each object, in reverse order (dependants first). With ``missing_ok``, objects
    that are already gone, or whose kind the cluster does not serve, are skipped."""
    dyn = dynamic_client(api)
    for obj in reversed(list(objects)):
        try:
            resource = resource_for(dyn, obj["apiVersion"], obj["kind"])
        except DeployError:
            if missing_ok:
                continue
            raise
        meta = obj.get("metadata", {})
        with api_errors(api, "delete", _describe(obj)):
            try:
                resource.delete(
                    name=meta["name"],
                    namespace=meta.get("namespace") if resource.namespaced else None,
                    body={"propagationPolicy": "Background"},
                )
            except ApiException as exc:
                if exc.status == 404 and missing_ok:
                    continue
                if exc.status in (401, 403):
                    raise
                raise DeployError(
                    f"cannot delete {_describe(obj)} ({exc.status}): {status_message(exc)}"
                ) from exc
