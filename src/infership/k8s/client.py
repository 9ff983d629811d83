"""Connecting to a cluster the way kubectl does, and turning API failures into DeployError.

Which kubeconfig: ``--kubeconfig`` when given, else ``$KUBECONFIG`` (a colon-separated list,
merged; files that do not exist are skipped), else ``~/.kube/config``, else the pod's service
account when running inside a cluster. ``--context`` picks a context, else the file's
current-context; the context's namespace is the default namespace (``default`` when it names
none), and an explicit ``--namespace`` wins over it.

A kubeconfig that turns TLS verification off (``insecure-skip-tls-verify``) gets one warning
line in ``KubeCluster.notes``, and urllib3's warning on every request is silenced.

This module, ``kube.py`` (``KubeCluster``), ``apply.py`` and ``discovery.py`` are the only ones
that import the ``kubernetes`` client, an optional dependency (the [kubernetes] extra).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from infership.errors import DeployError
from infership.k8s.cluster import Forbidden

if TYPE_CHECKING:
    from infership.k8s.kube import KubeCluster

_SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def kubeconfig_paths(explicit: str | None = None) -> list[Path]:
    """The kubeconfig files kubectl would read, in order; empty when there are none."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise DeployError(f"kubeconfig {explicit} does not exist")
        return [path]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        listed = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        return [p for p in listed if p.is_file()]
    default = Path("~/.kube/config").expanduser()
    return [default] if default.is_file() else []


def connect(kubeconfig: str | None = None, context: str | None = None) -> KubeCluster:
    """An API client for the chosen kubeconfig and context, or the in-cluster service account.

    Raises DeployError when no configuration is found, the context is unknown, or the file
    cannot be read. Nothing is sent to the server yet.
    """
    paths = kubeconfig_paths(kubeconfig)
    if not paths:
        return _in_cluster(context)
    joined = os.pathsep.join(str(p) for p in paths)
    try:
        contexts, current = config.list_kube_config_contexts(config_file=joined)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError) as exc:
        raise DeployError(f"cannot read kubeconfig {joined}: {exc}") from exc
    by_name = {c["name"]: c for c in contexts or []}
    chosen = context or (current or {}).get("name")
    if not chosen:
        raise DeployError(
            f"kubeconfig {joined} has no current-context: pick one with --context "
            f"({', '.join(sorted(by_name)) or 'it defines none'})"
        )
    if chosen not in by_name:
        raise DeployError(
            f"context {chosen!r} is not in kubeconfig {joined}; "
            f"known contexts: {', '.join(sorted(by_name)) or 'none'}"
        )
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=joined,
            context=chosen,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, OSError, ValueError) as exc:
        raise DeployError(f"cannot use context {chosen!r} from {joined}: {exc}") from exc
    named = by_name[chosen].get("context", {}).get("namespace")
    from infership.k8s.kube import KubeCluster

    return KubeCluster(
        client.ApiClient(configuration),
        context=chosen,
        namespace=named or "default",
        namespace_set=bool(named),
        notes=_tls_notes(configuration, f"context {chosen!r}"),
    )


def _tls_notes(configuration: client.Configuration, where: str) -> tuple[str, ...]:
    """One line when TLS is not verified, and urllib3's per-request warning silenced."""
    if configuration.verify_ssl or not str(configuration.host).startswith("https:"):
        return ()
    warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
    return (
        f"the API server's TLS certificate is not verified ({where} sets "
        f"insecure-skip-tls-verify): anyone on the path to {configuration.host} could "
        "read or change what infership sends and receives",
    )


def _in_cluster(context: str | None) -> KubeCluster:
    if context is not None or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        where = "--kubeconfig, $KUBECONFIG or ~/.kube/config"
        raise DeployError(
            f"no kubeconfig found ({where}) and not running inside a cluster: "
            "point KUBECONFIG at your cluster's config (kind, minikube and cloud CLIs write one)"
        )
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except ConfigException as exc:
        raise DeployError(f"cannot use the in-cluster service account: {exc}") from exc
    try:
        namespace = (_SERVICE_ACCOUNT / "namespace").read_text().strip() or "default"
    except OSError:
        namespace = "default"
    from infership.k8s.kube import KubeCluster

    return KubeCluster(
        client.ApiClient(configuration),
        namespace=namespace,
        namespace_set=True,
        notes=_tls_notes(configuration, "the in-cluster configuration"),
    )


def server_of(api: client.ApiClient) -> str:
    """The API server's URL, for messages."""
    return str(api.configuration.host)


def status_message(exc: ApiException) -> str:
    """The message of the Status object the server answered with, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or f"HTTP {exc.status}")


@contextmanager
def api_errors(api: client.ApiClient, verb: str, what: str) -> Iterator[None]:
    """Turn the client's failures into DeployError naming the server, the verb and the object.

    401, 403 and unreachable servers become DeployError; other API errors (404, 409, 422)
    pass through as ApiException for the caller to decide.
    """
    server = server_of(api)
    try:
        yield
    except ApiException as exc:
        if exc.status == 401:
            raise DeployError(
                f"the API server at {server} rejected our credentials (401) when trying to "
                f"{verb} {what}: the kubeconfig's token or certificate is missing or expired"
            ) from exc
        if exc.status == 403:
            raise Forbidden(
                f"forbidden to {verb} {what} (403: {status_message(exc)}); ask the cluster "
                "admin for that permission (RBAC) or use a context that has it"
            ) from exc
        raise
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DeployError(
            f"cannot reach the Kubernetes API server at {server} (to {verb} {what}): {reason}"
        ) from exc


@contextmanager
def api_call(api: client.ApiClient, verb: str, what: str) -> Iterator[None]:
    """``api_errors``, and every other API error (404 included) as DeployError too: for calls
    whose caller has handled the statuses it expects inside the block."""
    with api_errors(api, verb, what):
        try:
            yield
        except ApiException as exc:
            if exc.status in (401, 403):
                raise
            raise DeployError(
                f"the API server at {server_of(api)} refused to {verb} {what} "
                f"({exc.status}): {status_message(exc)}"
            ) from exc


def read_json(response: Any) -> Any:
    """The parsed body of a call made with ``_preload_content=False``.

    We read raw JSON rather than the client's models: plain dicts are what the manifests are,
    and they do not break on fields that a newer cluster adds.
    """
    try:
        return json.loads(response.data or b"null")
    finally:
        response.release_conn()
