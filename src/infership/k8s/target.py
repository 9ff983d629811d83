"""What the target cluster serves, as one frozen value: ``KubeTarget``.

Rendering asks it two kinds of question: which ``apiVersion`` to give a kind
(``api_version("PodDisruptionBudget")`` is ``policy/v1beta1`` on 1.20, ``policy/v1`` from 1.21)
and whether a field exists yet (``grpc_probes``: 1.24 and later). A target comes either from a
Kubernetes version alone (``KubeTarget.for_version("1.20")``, for ``manifests --kube-version``:
the built-in API versions that release serves, custom resources assumed at their newest
version) or from a live cluster's version and discovery (``discovery.discover``: exactly what
it serves).

Pure data, no client: ``manifests`` renders offline without the kubernetes package.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict

from infership.errors import ConfigError

Version = tuple[int, int]

OLDEST: Version = (1, 20)
"""The oldest Kubernetes infership renders for."""
NEWEST: Version = (1, 37)
"""The newest Kubernetes whose schemas the tests validate against; the default target."""


class Served(NamedTuple):
    """One API version of a kind; ``first``/``last``: the releases that serve it (built-ins),
    None for custom resources, whose CRDs any release may have installed."""

    api_version: str
    first: Version | None = None
    last: Version | None = None


# Every kind infership renders, its API versions newest first. Only those that changed within
# 1.20–1.37 have more than one. Sources: the Kubernetes deprecation guide and changelogs.
KINDS: dict[str, tuple[Served, ...]] = {
    "Namespace": (Served("v1", (1, 0)),),
    "ServiceAccount": (Served("v1", (1, 0)),),
    "ConfigMap": (Served("v1", (1, 2)),),
    "Secret": (Served("v1", (1, 0)),),
    "Service": (Served("v1", (1, 0)),),
    "Deployment": (Served("apps/v1", (1, 9)),),
    "Ingress": (Served("networking.k8s.io/v1", (1, 19)),),
    "NetworkPolicy": (Served("networking.k8s.io/v1", (1, 7)),),
    # v2 is GA in 1.23; v2beta2 (same fields for what we render) was removed in 1.26.
    "HorizontalPodAutoscaler": (
        Served("autoscaling/v2", (1, 23)),
        Served("autoscaling/v2beta2", (1, 12), (1, 25)),
    ),
    # policy/v1 from 1.21; policy/v1beta1 was removed in 1.25.
    "PodDisruptionBudget": (
        Served("policy/v1", (1, 21)),
        Served("policy/v1beta1", (1, 5), (1, 24)),
    ),
    # Gateway API CRDs: v1 since Gateway API 1.0 (2023); older installs serve v1beta1.
    "HTTPRoute": (
        Served("gateway.networking.k8s.io/v1"),
        Served("gateway.networking.k8s.io/v1beta1"),
        Served("gateway.networking.k8s.io/v1alpha2"),
    ),
    "ServiceMonitor": (Served("monitoring.coreos.com/v1"),),
    "PrometheusRule": (Served("monitoring.coreos.com/v1"),),
}

GRPC_PROBES: Version = (1, 24)
"""Container probes over gRPC: alpha (off) in 1.23, beta (on by default) 1.24, GA 1.27."""
NAMESPACE_NAME_LABEL: Version = (1, 21)
"""Namespaces labelled ``kubernetes.io/metadata.name`` by the API server: 1.21 (beta), GA 1.22."""

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?")


def parse_version(text: str) -> Version:
    """``1.20``, ``v1.20`` or ``1.20.2`` as ``(1, 20)``; ConfigError otherwise."""
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"{text!r} is not a Kubernetes version such as 1.20 or 1.33")
    return int(match[1]), int(match[2])


def version_text(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


def _in(version: Version, served: Served) -> bool:
    if served.first is None:
        return True
    return served.first <= version and (served.last is None or version <= served.last)


class KubeTarget(BaseModel):
    """The Kubernetes release a rendering is for, and the API versions its cluster serves.

    ``served`` None: what a stock cluster of ``version`` serves, with every custom resource
    at its newest version (nothing tells us which CRDs are installed). From discovery it is
    the exact set of group/versions the API server lists (``v1``, ``apps/v1``, ...).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Version = NEWEST
    served: frozenset[str] | None = None

    @classmethod
    def for_version(cls, text: str) -> KubeTarget:
        """The target for ``--kube-version TEXT``; ConfigError when older than 1.20."""
        version = parse_version(text)
        if version < OLDEST:
            raise ConfigError(
                f"Kubernetes {version_text(version)} is older than infership supports "
                f"({version_text(OLDEST)} to {version_text(NEWEST)})"
            )
        return cls(version=version)

    @property
    def label(self) -> str:
        """``Kubernetes 1.20``, for messages."""
        return f"Kubernetes {version_text(self.version)}"

    def serves(self, api_version: str) -> bool:
        """Whether ``api_version`` (``policy/v1``) is served by this cluster."""
        if self.served is not None:
            return api_version in self.served
        known = [s for versions in KINDS.values() for s in versions if s.api_version == api_version]
        return any(_in(self.version, s) for s in known)

    def api_version(self, kind: str) -> str:
        """The newest API version of ``kind`` that the cluster serves; the newest known one when
        it serves none (applying it then fails, saying what serves it)."""
        versions = KINDS[kind]
        for candidate in versions:
            if self.serves(candidate.api_version):
                return candidate.api_version
        return versions[0].api_version

    @property
    def grpc_probes(self) -> bool:
        """Whether a container probe may use ``grpc`` (else HTTP)."""
        return self.version >= GRPC_PROBES

    @property
    def labels_namespace_names(self) -> bool:
        """Whether the API server puts ``kubernetes.io/metadata.name`` on every Namespace."""
        return self.version >= NAMESPACE_NAME_LABEL


def served_by(api_version: str, kind: str) -> str | None:
    """Which Kubernetes releases serve built-in ``api_version``/``kind``, in words
    (``Kubernetes 1.21 and later``), or None when it is not a built-in we know."""
    for served in KINDS.get(kind, ()):
        if served.api_version == api_version and served.first is not None:
            first = version_text(served.first)
            if served.last is None:
                return f"Kubernetes {first} and later"
            return f"Kubernetes {first} to {version_text(served.last)}"
    return None
