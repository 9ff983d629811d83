"""What a live cluster serves: its version (``/version``) and API group/versions (``/api``,
``/apis``), as the ``KubeTarget`` that ``deploy`` renders for.

Read once per ApiClient (three small GETs) and kept on it, like the dynamic client.
"""

from __future__ import annotations

import re
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from infership.errors import ConfigError, DeployError
from infership.k8s.client import api_errors, read_json, server_of, status_message
from infership.k8s.target import NEWEST, OLDEST, KubeTarget, Version, parse_version, version_text

_ATTRIBUTE = "_infership_kube_target"


def discover(api: client.ApiClient) -> KubeTarget:
    """The cluster's Kubernetes version and served API versions.

    Raises DeployError when the server cannot be read, or runs a Kubernetes older than 1.20.
    Newer than 1.37 is rendered by what it serves, as 1.37 is.
    """
    cached = getattr(api, _ATTRIBUTE, None)
    if isinstance(cached, KubeTarget):
        return cached
    version = _version(_get(api, client.VersionApi(api).get_code, "the Kubernetes version"))
    if version < OLDEST:
        raise DeployError(
            f"the cluster at {server_of(api)} runs Kubernetes {version_text(version)}, older "
            f"than infership supports ({version_text(OLDEST)} to {version_text(NEWEST)})"
        )
    core = _get(api, client.CoreApi(api).get_api_versions, "the core API versions")
    groups = _get(api, client.ApisApi(api).get_api_versions, "the API groups")
    served = {str(v) for v in core.get("versions") or []}
    for group in groups.get("groups") or []:
        served.update(str(v["groupVersion"]) for v in group.get("versions") or [])
    target = KubeTarget(version=version, served=frozenset(served))
    setattr(api, _ATTRIBUTE, target)
    return target


def _get(api: client.ApiClient, call: Any, what: str) -> dict[str, Any]:
    with api_errors(api, "read", what):
        try:
            body = read_json(call(_preload_content=False))
        except ApiException as exc:
            raise DeployError(
                f"cannot read {what} from {server_of(api)} ({exc.status}): {status_message(exc)}"
            ) from exc
    if not isinstance(body, dict):
        raise DeployError(f"{server_of(api)} answered {what} with {body!r}, not an object")
    return body


def _version(info: dict[str, Any]) -> Version:
    # Managed clusters say minor "27+" (GKE, EKS); gitVersion "v1.27.3-eks-..." says it too.
    major, minor = (re.sub(r"\D", "", str(info.get(k, ""))) for k in ("major", "minor"))
    if major and minor:
        return int(major), int(minor)
    try:
        return parse_version(str(info.get("gitVersion", "")))
    except ConfigError as exc:
        raise DeployError(f"cannot tell the cluster's Kubernetes version from {info}") from exc
