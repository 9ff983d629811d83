"""Deploying a ``DeploySpec`` to a cluster: apply, wait for the rollout, roll back on failure.

``deploy(spec, cluster)`` is what ``infership deploy`` runs, and all of its policy:

1. Ask the cluster what it serves (``Cluster.target``) and render for that: API versions,
   probe kinds (``manifests.build_objects``).
2. Without ``create_namespace`` the Namespace is left out, and a missing one is an error.
3. Server-side apply every object (``dry_run``: the server validates, nothing is stored).
4. A Deployment created by this deploy with an autoscaler starts at the autoscaler's minimum
   (see ``_hand_replicas_to_the_autoscaler``).
5. Wait for the rollout. When it fails and the Deployment existed before, put the previous
   revision back and wait for that; a first revision, or ``rollback_on_failure=False``, is
   left as it is.

With ``canary``, steps 3–5 are ``canary.run_canary`` instead: the new image beside the stable
one, promoted or rolled back on live metrics.

The result is an ``Outcome``; what happens meanwhile goes to an ``Observer`` (the CLI prints
it). Nothing here knows about a terminal, exit codes or kubeconfigs, and the cluster is any
``cluster.Cluster``: the real one (``kube.KubeCluster``) or a test's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from infership.errors import DeployError, RolloutFailed
from infership.k8s.cluster import FIELD_MANAGER, INSTANCE_LABEL, Cluster, Forbidden, Obj
from infership.k8s.manifests import build_objects, compatibility_notes
from infership.k8s.rollout import RolloutStatus, images, rollback, wait_for_rollout
from infership.k8s.spec import DeploySpec

if TYPE_CHECKING:
    from infership.k8s.analysis import CanaryThresholds
    from infership.k8s.canary import CanaryProgress, CanaryReport

REPLICAS_FIELD_MANAGER = f"{FIELD_MANAGER}-initial-replicas"
"""Owns ``spec.replicas`` of a Deployment that an autoscaler scales (see
``_hand_replicas_to_the_autoscaler``); infership's own applies never set that field."""

# Every kind infership creates for one deployment, in apply order; `delete` removes these
# (in reverse) when they carry the instance label. The Namespace is never deleted: other
# things may live in it.
MANAGED_KINDS: tuple[str, ...] = (
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Deployment",
    "Service",
    "Ingress",
    "HTTPRoute",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "ServiceMonitor",
    "PrometheusRule",
)


class Observer:
    """What ``deploy`` reports while it works; every method does nothing unless overridden."""

    def notes(self, notes: list[str]) -> None:
        """What the objects cannot do on this cluster (``compatibility_notes``)."""

    def applied(self, spec: DeploySpec, objects: list[Obj], *, dry_run: bool) -> None:
        """The objects were applied (``spec`` as rendered: namespace and cluster target)."""

    def progress(self, status: RolloutStatus) -> None:
        """One look at the rollout (or the rollback's rollout)."""

    def rollout_failed(self, error: RolloutFailed) -> None:
        """The new revision did not become ready; what follows is the rollback, if any."""

    def rolling_back(self, namespace: str, name: str, revision: int, images: str) -> None:
        """Revision ``revision`` (running ``images``) was put back; waiting for it now."""

    def canary(self, progress: CanaryProgress) -> None:
        """A step of a canary release."""


@dataclass(frozen=True)
class CanaryRelease:
    """Deploy as a canary: ``weight`` percent of traffic for ``window_s`` seconds, judged
    against ``thresholds``."""

    weight: int
    window_s: float
    thresholds: CanaryThresholds


Kept = Literal["asked", "first revision"]


@dataclass(frozen=True)
class Outcome:
    """What a deploy did. ``succeeded`` is False after a failed rollout (rolled back or not)
    and after a canary that was rolled back."""

    spec: DeploySpec
    """The spec as rendered: the namespace used and the cluster's target."""
    applied: tuple[Obj, ...] = ()
    dry_run: bool = False
    status: RolloutStatus | None = None
    """The last status of the rollout waited for (the rollback's, after one)."""
    failure: RolloutFailed | None = None
    """Why the new revision did not roll out."""
    rolled_back_to: int | None = None
    """The revision put back after ``failure``."""
    kept: Kept | None = None
    """Why a failed revision was left in place: rollback was not wanted, or there was no
    earlier revision (the Deployment was created by this deploy)."""
    canary: CanaryReport | None = None

    @property
    def succeeded(self) -> bool:
        if self.canary is not None:
            return self.canary.promoted
        return self.failure is None


def deploy(
    spec: DeploySpec,
    cluster: Cluster,
    *,
    create_namespace: bool = False,
    dry_run: bool = False,
    force_conflicts: bool = False,
    rollback_on_failure: bool = True,
    timeout_s: float = 300.0,
    poll_s: float = 2.0,
    canary: CanaryRelease | None = None,
    observer: Observer | None = None,
) -> Outcome:
    """Deploy ``spec`` to ``cluster`` and wait for it (see the module docstring).

    Raises DeployError when the cluster refuses a step, the namespace is missing, or a
    rollback fails or does not become ready either; CanaryFailed when a canary has no stable
    version or never becomes ready. A failed rollout itself is not raised: it is in the
    ``Outcome``, with what was done about it.
    """
    seen = observer or Observer()
    spec = spec.model_copy(update={"kubernetes": cluster.target()})
    notes = compatibility_notes(spec)
    if notes:
        seen.notes(notes)
    objects = build_objects(spec)
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    if not create_namespace:
        objects = [o for o in objects if o["kind"] != "Namespace"]
        namespaces = []
        if namespace_exists(cluster, spec.namespace) is False:
            raise DeployError(
                f"namespace {spec.namespace} does not exist: pass --create-namespace, or pick "
                "another with --namespace"
            )
    if canary is not None:
        if dry_run:
            raise DeployError("a canary cannot be a dry run")
        if namespaces:
            cluster.apply(namespaces)
        return Outcome(
            spec, canary=_run_canary(spec, cluster, canary, timeout_s, poll_s, seen.canary)
        )

    ns, name = spec.namespace, spec.name
    existed = cluster.get("Deployment", ns, name) is not None
    applied = cluster.apply(objects, dry_run=dry_run, force_conflicts=force_conflicts)
    seen.applied(spec, applied, dry_run=dry_run)
    if dry_run:
        return Outcome(spec, tuple(applied), dry_run=True)
    if not existed:
        _hand_replicas_to_the_autoscaler(spec, cluster)
    try:
        status = wait_for_rollout(
            cluster, ns, name, timeout_s=timeout_s, on_progress=seen.progress, poll_s=poll_s
        )
    except RolloutFailed as failure:
        seen.rollout_failed(failure)
        done = Outcome(spec, tuple(applied), failure=failure)
        if not rollback_on_failure:
            return replace(done, kept="asked")
        if not existed:
            return replace(done, kept="first revision")
        try:
            revision = rollback(cluster, ns, name)
        except DeployError as undo:
            raise DeployError(f"could not roll back: {undo}") from undo
        seen.rolling_back(ns, name, revision, images(cluster, ns, name))
        try:
            status = wait_for_rollout(
                cluster, ns, name, timeout_s=timeout_s, on_progress=seen.progress, poll_s=poll_s
            )
        except RolloutFailed as again:
            raise DeployError(
                f"rolled back to revision {revision}, but it is not ready either: {again}"
            ) from again
        return replace(done, status=status, rolled_back_to=revision)
    return Outcome(spec, tuple(applied), status=status)


def _hand_replicas_to_the_autoscaler(spec: DeploySpec, cluster: Cluster) -> None:
    """Start a new autoscaled Deployment at the autoscaler's minimum, owned by another field
    manager.

    The rendered Deployment has no ``replicas`` (the autoscaler owns the count: a value there
    would reset it on every apply), so the API server creates it with one pod, and the
    autoscaler would add the rest only after its first sync, once the deploy has reported
    success with one pod. Applying ``replicas`` alone under ``REPLICAS_FIELD_MANAGER`` starts
    at the minimum at once; infership's own applies never name the field, so they neither
    reset it nor take it back from the autoscaler.
    """
    if spec.autoscaling is None:
        return
    cluster.apply(
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": spec.name, "namespace": spec.namespace},
                "spec": {"replicas": spec.autoscaling.min_replicas},
            }
        ],
        field_manager=REPLICAS_FIELD_MANAGER,
    )


def _run_canary(
    spec: DeploySpec,
    cluster: Cluster,
    release: CanaryRelease,
    timeout_s: float,
    poll_s: float,
    on_progress: Callable[[CanaryProgress], None],
) -> CanaryReport:
    # Looked up at call time, so that tests may stand in for run_canary.
    from infership.k8s import canary

    return canary.run_canary(
        cluster,
        spec,
        weight=release.weight,
        window_s=release.window_s,
        thresholds=release.thresholds,
        on_progress=on_progress,
        rollout_timeout_s=timeout_s,
        rollout_poll_s=poll_s,
    )


def namespace_exists(cluster: Cluster, namespace: str) -> bool | None:
    """Whether ``namespace`` exists; None when we may not read namespaces (common for users
    whose rights are limited to one namespace), so the caller just goes ahead."""
    try:
        return cluster.get("Namespace", None, namespace) is not None
    except Forbidden:
        return None


def find_instance(cluster: Cluster, namespace: str, name: str) -> list[Obj]:
    """Every object of the kinds infership creates that carries ``instance=name`` in
    ``namespace``, in apply order, as minimal references (apiVersion, kind, metadata)."""
    target = cluster.target()
    found: list[Obj] = []
    for kind in MANAGED_KINDS:
        for item in cluster.list_objects(kind, namespace, labels=f"{INSTANCE_LABEL}={name}"):
            found.append(
                {
                    "apiVersion": target.api_version(kind),
                    "kind": kind,
                    "metadata": {
                        "name": item.get("metadata", {}).get("name"),
                        "namespace": namespace,
                    },
                }
            )
    return found


__all__ = [
    "MANAGED_KINDS",
    "CanaryRelease",
    "Observer",
    "Outcome",
    "deploy",
    "find_instance",
    "namespace_exists",
]
