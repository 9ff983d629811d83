"""The one seam between infership's deploy policy and a Kubernetes API server: ``Cluster``.

``deploy``, ``rollout``, ``canary`` and ``analysis`` ask a cluster for nothing but what this
protocol lists: what it serves, server-side apply, get/list of plain-dict objects, a JSON
patch, delete, waiting for an object to change, and a GET through a pod's proxy. The real
implementation, over the official client, is ``kube.KubeCluster`` (``client.connect`` returns
one); tests may pass the fake API server's ``KubeCluster`` or any object of this shape.

Errors: every method raises ``DeployError`` when the server refuses or cannot be reached, with
a message naming the server, the verb and the object; ``Forbidden`` (a ``DeployError``) when
RBAC says no, so callers may treat "may not read" apart from "absent". Absent objects are not
errors: ``get`` answers None.

Pure: importing this module does not import the ``kubernetes`` package.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from infership.errors import DeployError
from infership.k8s.target import KubeTarget

Obj = dict[str, Any]

FIELD_MANAGER = "infership"
"""The field manager of every server-side apply infership makes. Its other managers start
with it, so that an apply knows their fields as its own to take back."""
PATCH_FIELD_MANAGER = f"{FIELD_MANAGER}-patch"
"""The field manager of infership's JSON patches: a rollback's template."""
INSTANCE_LABEL = "app.kubernetes.io/instance"


class Forbidden(DeployError):
    """The server answered 403: the credentials may not do this (RBAC)."""


class PodUnreachable(DeployError):
    """A pod did not answer through the API server's proxy (not running, refused, timed out)."""


class Cluster(Protocol):
    """What infership needs from a Kubernetes API server.

    ``kind`` is a kind infership knows (``Deployment``, ``Pod``, ``ReplicaSet``, ``Event``,
    ``Namespace``, ``HorizontalPodAutoscaler``, any kind of ``target.KINDS``); the
    implementation picks the API version the cluster serves. ``namespace`` is None for
    cluster-scoped kinds.
    """

    @property
    def server(self) -> str:
        """The API server's URL, for messages."""
        ...

    def target(self) -> KubeTarget:
        """The cluster's Kubernetes version and the API versions it serves."""
        ...

    def apply(
        self,
        objects: Sequence[Obj],
        *,
        dry_run: bool = False,
        field_manager: str = FIELD_MANAGER,
        force_conflicts: bool = False,
    ) -> list[Obj]:
        """Server-side apply each object in order; return what the server answered. A kind
        the cluster does not serve fails before any write. ``dry_run``: validated and
        defaulted by the server, stored nowhere. Fields another manager holds raise
        FieldConflict (a DeployError) unless ``force_conflicts``; infership's own managers'
        fields are always taken."""
        ...

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        """The object, or None when it does not exist or the cluster does not serve ``kind``."""
        ...

    def list_objects(
        self, kind: str, namespace: str, *, labels: str = "", fields: str = ""
    ) -> list[Obj]:
        """The objects of ``kind`` in ``namespace`` matching the label selector ``labels``
        (``a=b,c=d``) and field selector ``fields``; empty when ``kind`` is not served."""
        ...

    def patch(self, kind: str, namespace: str, name: str, operations: list[Obj]) -> None:
        """Apply a JSON patch (RFC 6902) to one object."""
        ...

    def delete(self, objects: Iterable[Obj], *, missing_ok: bool = True) -> None:
        """Delete each object, in reverse order (dependants first); with ``missing_ok``, those
        already gone or of a kind not served are skipped."""
        ...

    def wait_for_change(
        self, kind: str, namespace: str, name: str, resource_version: str, timeout_s: float
    ) -> None:
        """Return once the object changes past ``resource_version`` (a watch), or after
        ``timeout_s`` (polling where no watch can be used)."""
        ...

    def proxy_get(self, namespace: str, pod: str, port: int, path: str, *, timeout_s: float) -> str:
        """``GET`` ``path`` on ``pod:port`` through the API server's pod proxy, as text.

        Raises Forbidden when the credentials may not use ``pods/proxy``, PodUnreachable when
        the pod does not answer."""
        ...
