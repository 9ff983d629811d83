"""Canary releases: the new image beside the stable one, judged on live traffic.

``run_canary`` is what ``infership deploy --canary PERCENT`` calls:

1. The stable Deployment ``<name>`` must exist and have available pods: it is the baseline.
2. Apply ``canary_objects(spec, weight=...)``: Deployment and Service ``<name>-canary`` with the
   new image, and the traffic split (HTTPRoute weights, or the ingress-nginx canary Ingress).
3. Wait for the canary's rollout. If it never becomes ready: roll back, raise CanaryFailed.
4. Snapshot both groups' ``/metrics``, watch for the window (re-checking every ``interval_s``
   and stopping early once the canary clearly fails), snapshot again and compare
   (``analysis.compare``).
5. Promote: apply ``build_objects(spec)`` (the stable Deployment gets the new image, the route
   goes back to one backend), wait for that rollout, delete the canary's own objects.
   Or roll back: delete the canary's own objects and put the stable route back.

Rolling back never re-applies the stable Deployment: ``spec`` carries the *new* image, so the
only objects taken from ``build_objects(spec)`` are those a canary changed in place (the
HTTPRoute ``<name>``, whose content does not depend on the image); everything else the canary
added is deleted. The stable pods are not touched, and serve on throughout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from infership.errors import CanaryFailed, DeployError, RolloutFailed
from infership.k8s.analysis import (
    CanaryThresholds,
    Comparison,
    GroupSnapshot,
    compare,
    format_table,
    group_window,
    snapshot_group,
)
from infership.k8s.cluster import Cluster
from infership.k8s.manifests import TRACK_LABEL, build_objects, canary_objects, labels
from infership.k8s.rollout import RolloutStatus, rollback, wait_for_rollout
from infership.k8s.spec import DeploySpec

Phase = Literal["deploying", "watching", "promoting", "rolling back"]


@dataclass(frozen=True)
class CanaryProgress:
    """What ``on_progress`` receives: the phase, a line to show, and during the window the
    comparison so far."""

    phase: Phase
    message: str
    elapsed_s: float
    comparison: Comparison | None = None
    rollout: RolloutStatus | None = None


@dataclass(frozen=True)
class CanaryReport:
    """The outcome of one canary: both groups' numbers, the thresholds, the verdict and what
    was done about it. ``promoted`` is False after a rollback; the CLI exits non-zero then."""

    name: str
    namespace: str
    image: str
    weight: int
    window_s: float
    watched_s: float
    thresholds: CanaryThresholds
    comparison: Comparison
    promoted: bool
    ended_early: bool = False
    notes: tuple[str, ...] = ()

    @property
    def action(self) -> str:
        return "promoted" if self.promoted else "rolled back"

    def to_text(self) -> str:
        """The report as the CLI prints it: a table, the thresholds, the verdict and why."""
        c, t = self.comparison, self.thresholds
        rows = [("", "pods", "requests", "errors", "error rate", "p50", "p99", "restarts")]
        for label, g in (("stable", c.stable), ("canary", c.canary)):
            rows.append(
                (
                    label,
                    str(g.pods),
                    str(int(g.requests)),
                    str(int(g.errors)),
                    _pct(g.error_rate),
                    _ms(g.p50_s),
                    _ms(g.p99_s),
                    str(g.restarts),
                )
            )
        watched = f"{_secs(self.watched_s)} of a {_secs(self.window_s)} window"
        lines = [
            f"canary {self.namespace}/{self.name}-canary: {self.image} at {self.weight}% "
            f"of traffic, watched {watched}" + (" (stopped early)" if self.ended_early else ""),
            "",
            format_table(rows),
            "",
            "thresholds: error rate at most "
            f"{_pct(t.max_error_rate)} and at most stable + {_pct(t.max_error_rate_increase)}; "
            f"p99 at most {t.max_p99_ratio:g}x stable (ignored within "
            f"{t.p99_tolerance_s * 1000:g} ms); at least {t.min_requests} canary requests",
            f"verdict: {c.verdict}, {self.action}",
            *(f"  - {reason}" for reason in c.reasons),
            *(f"note: {note}" for note in self.notes),
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (``--json``)."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "image": self.image,
            "weight": self.weight,
            "window_s": self.window_s,
            "watched_s": round(self.watched_s, 3),
            "ended_early": self.ended_early,
            "thresholds": self.thresholds.model_dump(),
            "stable": self.comparison.stable.as_dict(),
            "canary": self.comparison.canary.as_dict(),
            "verdict": self.comparison.verdict,
            "reasons": list(self.comparison.reasons),
            "promoted": self.promoted,
            "action": self.action,
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.2f}%"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def _secs(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def _split(spec: DeploySpec, weight: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the canary's own objects, the stable objects it changes in place).

    The first are deleted when the canary ends either way. The second are what rollback
    re-applies from ``build_objects(spec)``: the HTTPRoute, with the weight back to the
    stable Service alone. Deployments are never in the second list, whatever the manifests
    do: re-applying ``<name>`` from this spec would put the new image on the stable pods.
    """
    stable = {_key(o): o for o in build_objects(spec)}
    own, shared = [], []
    for obj in canary_objects(spec, weight=weight):
        if _key(obj) not in stable:
            own.append(obj)
        elif obj["kind"] != "Deployment":
            shared.append(stable[_key(obj)])
    return own, shared


def _require_stable(cluster: Cluster, spec: DeploySpec) -> None:
    deployment = cluster.get("Deployment", spec.namespace, spec.name)
    if deployment is None:
        raise CanaryFailed(
            f"no stable version to compare against: there is no Deployment {spec.name} in "
            f"namespace {spec.namespace}; deploy without --canary first"
        )
    available = int((deployment.get("status") or {}).get("availableReplicas") or 0)
    if available < 1:
        raise CanaryFailed(
            f"no stable version to compare against: Deployment {spec.namespace}/{spec.name} "
            "has no available pods; fix or redeploy it without --canary first"
        )


def run_canary(
    cluster: Cluster,
    spec: DeploySpec,
    *,
    weight: int,
    window_s: float,
    thresholds: CanaryThresholds,
    on_progress: Callable[[CanaryProgress], None] | None = None,
    interval_s: float = 15.0,
    rollout_timeout_s: float = 300.0,
    rollout_poll_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> CanaryReport:
    """Run ``spec.image`` as a canary taking ``weight`` percent of traffic for ``window_s``
    seconds, then promote it or roll it back; return the report either way.
    ``interval_s`` is how often the pods are scraped during the window; ``rollout_timeout_s``
    and ``rollout_poll_s`` go to ``wait_for_rollout`` for the canary's and the promotion's
    rollouts.

    Raises CanaryFailed when there is no stable version, or when the canary never becomes
    ready (it is rolled back first); DeployError when the cluster refuses a step. Any other
    failure while the canary runs (including Ctrl-C) rolls it back before it propagates, so
    an interrupted canary never keeps its share of traffic.
    """
    if not 0 < weight < 100:
        raise DeployError(f"a canary weight is a percentage between 1 and 99, got {weight}")
    if spec.traffic == "none":
        raise DeployError(
            "a canary needs a traffic split: deploy with traffic 'gateway' (HTTPRoute weights) "
            "or 'ingress' (ingress-nginx canary annotations); with 'none' the canary would "
            "receive no requests to judge"
        )
    started = time.monotonic()

    def progress(phase: Phase, message: str, **extra: Any) -> None:
        if on_progress is not None:
            on_progress(CanaryProgress(phase, message, time.monotonic() - started, **extra))

    _require_stable(cluster, spec)
    own, shared = _split(spec, weight)
    canary_name = spec.name + "-canary"

    def roll_back() -> None:
        progress("rolling back", f"deleting {canary_name} and restoring the route")
        if shared:
            cluster.apply(shared)
        cluster.delete(own)

    progress("deploying", f"applying {canary_name} with {spec.image} at {weight}%")
    try:
        cluster.apply(canary_objects(spec, weight=weight))
        wait_for_rollout(
            cluster,
            spec.namespace,
            canary_name,
            timeout_s=rollout_timeout_s,
            on_progress=lambda s: progress("deploying", s.line(), rollout=s),
            poll_s=rollout_poll_s,
        )
    except RolloutFailed as exc:
        roll_back()
        raise CanaryFailed(
            f"the canary never became ready, so it was rolled back and the stable version "
            f"kept all traffic: {exc}"
            + "".join(f"\n  - {r}" for r in exc.reasons if r not in str(exc))
        ) from exc
    except BaseException:
        roll_back()
        raise

    try:
        comparison, watched, early, notes = _watch(
            cluster, spec, window_s, thresholds, interval_s, sleep, progress
        )
    except BaseException:
        roll_back()
        raise

    promoted = comparison.promotes(thresholds)
    if promoted:
        _promote(cluster, spec, own, rollout_timeout_s, rollout_poll_s, progress)
    else:
        roll_back()
    return CanaryReport(
        name=spec.name,
        namespace=spec.namespace,
        image=spec.image,
        weight=weight,
        window_s=window_s,
        watched_s=watched,
        thresholds=thresholds,
        comparison=comparison,
        promoted=promoted,
        ended_early=early,
        notes=notes,
    )


def _watch(
    cluster: Cluster,
    spec: DeploySpec,
    window_s: float,
    thresholds: CanaryThresholds,
    interval_s: float,
    sleep: Callable[[float], None],
    progress: Callable[..., None],
) -> tuple[Comparison, float, bool, tuple[str, ...]]:
    """Snapshot, watch, compare. Returns (comparison, seconds watched, ended early, notes)."""
    selectors = {track: {**labels(spec), TRACK_LABEL: track} for track in ("stable", "canary")}

    def snapshot() -> dict[str, GroupSnapshot]:
        return {
            track: snapshot_group(cluster, spec.namespace, sel, default_port=spec.http_port)
            for track, sel in selectors.items()
        }

    start = snapshot()
    began = time.monotonic()
    end = start
    comparison = compare(
        group_window(start["stable"], end["stable"]),
        group_window(start["canary"], end["canary"]),
        thresholds,
    )
    early = False
    while (elapsed := time.monotonic() - began) < window_s:
        sleep(min(interval_s, window_s - elapsed))
        end = snapshot()
        comparison = compare(
            group_window(start["stable"], end["stable"]),
            group_window(start["canary"], end["canary"]),
            thresholds,
        )
        progress("watching", _progress_line(comparison), comparison=comparison)
        # "fail" needs min_requests canary requests (compare), so a single early error
        # cannot end the window; past that, more traffic would only cost more failures.
        if comparison.verdict == "fail":
            early = time.monotonic() - began < window_s
            break
    watched = time.monotonic() - began
    notes = tuple(
        f"{track} pod {pod} could not be scraped at the end of the window ({why})"
        for track, group in end.items()
        for pod, why in group.unreachable.items()
    )
    if not end["canary"].counters:
        notes += ("no canary pod could be scraped; its traffic is unknown",)
    return comparison, watched, early, notes


def _progress_line(c: Comparison) -> str:
    return (
        f"stable {int(c.stable.requests)} req, {_pct(c.stable.error_rate)} errors, "
        f"p99 {_ms(c.stable.p99_s)} | canary {int(c.canary.requests)} req, "
        f"{_pct(c.canary.error_rate)} errors, p99 {_ms(c.canary.p99_s)} | {c.verdict}"
    )


def _promote(
    cluster: Cluster,
    spec: DeploySpec,
    own: list[dict[str, Any]],
    rollout_timeout_s: float,
    rollout_poll_s: float,
    progress: Callable[..., None],
) -> None:
    """Give the stable Deployment the new image and the route back to it, then remove the
    canary once the stable pods are rolled out. The stable rollout replaces pods one at a
    time with none unavailable, so the stable Service serves throughout."""
    progress("promoting", f"rolling {spec.name} out with {spec.image}")
    cluster.apply(build_objects(spec))
    try:
        wait_for_rollout(
            cluster,
            spec.namespace,
            spec.name,
            timeout_s=rollout_timeout_s,
            on_progress=lambda s: progress("promoting", s.line(), rollout=s),
            poll_s=rollout_poll_s,
        )
    except RolloutFailed as exc:
        revision = rollback(cluster, spec.namespace, spec.name)
        cluster.delete(own)
        raise CanaryFailed(
            f"the canary passed, but rolling the stable Deployment out with {spec.image} "
            f"failed, so it was rolled back to revision {revision}: {exc}"
        ) from exc
    cluster.delete(own)
