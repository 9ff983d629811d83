"""``KubeCluster``: the ``Cluster`` interface (cluster.py) over the official kubernetes client.

The only module besides ``client``, ``apply`` and ``discovery`` that imports ``kubernetes``.
Objects travel as plain dicts parsed from the server's JSON (``read_json``), not the client's
models: they are what the manifests are, and they do not break on fields a newer cluster adds.
Core kinds (Deployment, ReplicaSet, Pod, Event, Namespace) go through the typed APIs, which
need no discovery; every other kind through the discovery-backed dynamic client, at the API
version the cluster serves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import urllib3.exceptions
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from infership.errors import DeployError
from infership.k8s.apply import apply_objects, delete_objects, dynamic_client, resource_for
from infership.k8s.client import api_call, read_json, server_of, status_message
from infership.k8s.cluster import (
    FIELD_MANAGER,
    PATCH_FIELD_MANAGER,
    Forbidden,
    Obj,
    PodUnreachable,
)
from infership.k8s.discovery import discover
from infership.k8s.target import KubeTarget


class KubeCluster:
    """A cluster reached through one ``kubernetes.client.ApiClient``, and where it points:
    the kubeconfig context used, its default namespace, and what to tell the user once."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        context: str | None = None,
        namespace: str = "default",
        namespace_set: bool = False,
        notes: tuple[str, ...] = (),
    ) -> None:
        self.api = api
        self.context = context
        self.namespace = namespace
        self.namespace_set = namespace_set
        """Whether the context (or the service account) names the namespace; when it does
        not, ``namespace`` is kubectl's fallback, ``default``, and the CLI prefers its own."""
        self.notes = notes
        """Warnings about the connection itself (TLS not verified), each one line, to show
        once rather than the client's warning on every request."""

    @property
    def server(self) -> str:
        return server_of(self.api)

    def target(self) -> KubeTarget:
        return discover(self.api)

    def apply(
        self,
        objects: Sequence[Obj],
        *,
        dry_run: bool = False,
        field_manager: str = FIELD_MANAGER,
        force_conflicts: bool = False,
    ) -> list[Obj]:
        return apply_objects(
            self.api,
            objects,
            field_manager=field_manager,
            dry_run=dry_run,
            force_conflicts=force_conflicts,
        )

    def delete(self, objects: Iterable[Obj], *, missing_ok: bool = True) -> None:
        delete_objects(self.api, objects, missing_ok=missing_ok)

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        what = f"namespace {name}" if namespace is None else f"{kind} {namespace}/{name}"
        typed = self._typed_get(kind)
        with api_call(self.api, "get", what):
            try:
                if typed is not None:
                    args = (name,) if namespace is None else (name, namespace)
                    found: Obj = read_json(typed(*args, _preload_content=False))
                    return found
                resource = self._resource(kind)
                if resource is None:
                    return None
                return dict(resource.get(name=name, namespace=namespace).to_dict())
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def list_objects(
        self, kind: str, namespace: str, *, labels: str = "", fields: str = ""
    ) -> list[Obj]:
        what = f"{_PLURAL.get(kind, kind + 's')} in namespace {namespace}"
        typed = self._typed_list(kind)
        with api_call(self.api, "list", what):
            if typed is not None:
                body = read_json(
                    typed(
                        namespace,
                        label_selector=labels or None,
                        field_selector=fields or None,
                        _preload_content=False,
                    )
                )
            else:
                resource = self._resource(kind)
                if resource is None:
                    return []  # a CRD that is not installed holds nothing
                body = resource.get(
                    namespace=namespace,
                    label_selector=labels or None,
                    field_selector=fields or None,
                ).to_dict()
        return list((body or {}).get("items") or [])

    def patch(self, kind: str, namespace: str, name: str, operations: list[Obj]) -> None:
        what = f"{kind} {namespace}/{name}"
        with api_call(self.api, "patch", what):
            if kind == "Deployment":
                read_json(
                    client.AppsV1Api(self.api).patch_namespaced_deployment(
                        name,
                        namespace,
                        operations,
                        field_manager=PATCH_FIELD_MANAGER,
                        _content_type="application/json-patch+json",
                        _preload_content=False,
                    )
                )
                return
            resource = self._resource(kind)
            if resource is None:
                raise DeployError(f"the cluster does not serve {kind}")
            resource.patch(
                body=operations,
                name=name,
                namespace=namespace,
                field_manager=PATCH_FIELD_MANAGER,
                content_type="application/json-patch+json",
            )

    def wait_for_change(
        self, kind: str, namespace: str, name: str, resource_version: str, timeout_s: float
    ) -> None:
        started = time.monotonic()
        lister = self._typed_list(kind)
        response: Any = None
        try:
            if lister is None:
                raise ValueError(f"no watch for {kind}")
            response = lister(
                namespace,
                field_selector=f"metadata.name={name}",
                watch=True,
                resource_version=resource_version or None,
                timeout_seconds=max(1, int(timeout_s)),
                _preload_content=False,
                _request_timeout=(5, max(timeout_s, 0.01)),
            )
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                event = json.loads(line)
                obj = event.get("object") or {}
                meta = obj.get("metadata") or {}
                # Servers may replay the current state first; only a newer version is news.
                if meta.get("name") == name and meta.get("resourceVersion") != resource_version:
                    return
        except (ApiException, urllib3.exceptions.HTTPError, ValueError, OSError):
            pass  # read timeout, or no watch here: fall through to polling
        finally:
            if response is not None:
                response.close()
                response.release_conn()
        # The watch ended early without news (or could not start): do not spin.
        left = timeout_s - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)

    def proxy_get(self, namespace: str, pod: str, port: int, path: str, *, timeout_s: float) -> str:
        core = client.CoreV1Api(self.api)
        try:
            # With _preload_content=False the client returns the raw urllib3 response,
            # though its annotation says str.
            response: Any = core.connect_get_namespaced_pod_proxy_with_path(
                f"{pod}:{port}",
                namespace,
                path.lstrip("/"),
                _preload_content=False,
                _request_timeout=timeout_s,
            )
            try:
                return str(response.data.decode("utf-8"))
            finally:
                response.release_conn()
        except ApiException as exc:
            if exc.status in (401, 403):
                raise Forbidden(
                    f"cannot GET /{path.lstrip('/')} of pod {namespace}/{pod} through the API "
                    f"server's pod proxy ({exc.status}: {status_message(exc)})"
                ) from exc
            raise PodUnreachable(f"HTTP {exc.status}: {status_message(exc)}") from exc
        except (urllib3.exceptions.HTTPError, ValueError) as exc:  # a timeout, bad bytes
            raise PodUnreachable(str(exc) or type(exc).__name__) from exc

    def _typed_get(self, kind: str) -> Callable[..., Any] | None:
        apps, core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        calls: dict[str, Callable[..., Any]] = {
            "Deployment": apps.read_namespaced_deployment,
            "Pod": core.read_namespaced_pod,
            "Namespace": core.read_namespace,
        }
        return calls.get(kind)

    def _typed_list(self, kind: str) -> Callable[..., Any] | None:
        apps, core = client.AppsV1Api(self.api), client.CoreV1Api(self.api)
        calls: dict[str, Callable[..., Any]] = {
            "Deployment": apps.list_namespaced_deployment,
            "ReplicaSet": apps.list_namespaced_replica_set,
            "Pod": core.list_namespaced_pod,
            "Event": core.list_namespaced_event,
        }
        return calls.get(kind)

    def _resource(self, kind: str) -> Any:
        """The dynamic client's resource for ``kind`` at the served version; None if none."""
        target = self.target()
        try:
            return resource_for(dynamic_client(self.api), target.api_version(kind), kind, target)
        except DeployError:
            return None


_PLURAL = {"Pod": "pods", "Event": "events"}
