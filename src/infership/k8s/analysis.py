"""Canary analysis: scrape pods' ``/metrics``, turn two snapshots into rates, compare groups.

``run_canary`` (canary.py) takes a snapshot of the stable and the canary pods at the start and
at the end of its window; this module turns each pair into what happened *during* the window
and decides whether the canary is at least as good as the stable version.

The parsing and the arithmetic are pure (``parse_metrics``, ``window``, ``summarise``,
``compare``); only ``snapshot_group`` talks to the API server, through its pod proxy, so the
cluster needs no Prometheus and the caller needs no network path to the pods.

What counts as an error: the ``infership_requests_total`` outcomes ``server_error`` (500: the
model or the server failed) and ``capacity_error`` (503/504: queue full, deadline passed, model
not ready). Both are the server's doing, so a version that produces more of them is worse.
``client_error`` (4xx: bad input, unknown model, missing key) is the caller's doing and reaches
both versions in the same proportion, and ``cancelled`` means the caller went away; neither
says anything about the new version. Every outcome counts in the denominator: the error rate
is the share of answered requests that failed on the server's side.

Latency is ``infership_request_duration_seconds``, which the server observes for successful
inferences only, so a fast failure cannot make a broken version look quick.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict, Field

from infership.metrics import histogram_quantile

if TYPE_CHECKING:
    from infership.k8s.cluster import Cluster

REQUESTS = "infership_requests"
DURATION = "infership_request_duration_seconds"
ERROR_OUTCOMES = frozenset({"server_error", "capacity_error"})

Verdict = Literal["pass", "fail", "inconclusive"]


class CanaryThresholds(BaseModel):
    """When a canary is good enough to replace the stable version.

    The defaults suit a classification service at tens of requests per second; raise
    ``min_requests`` for noisy traffic, lower it (and shorten the window) in a quiet cluster.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    """The canary fails above this error rate whatever the stable version does."""
    max_error_rate_increase: float = Field(default=0.005, ge=0.0, le=1.0)
    """...and above the stable error rate plus this much (absolute, 0.005 = 0.5 points)."""
    max_p99_ratio: float = Field(default=1.5, ge=1.0)
    """The canary fails when its p99 is more than this many times the stable p99..."""
    p99_tolerance_s: float = Field(default=0.005, ge=0.0)
    """...and also more than this many seconds above it. The p99 is interpolated within
    histogram buckets that are 2.5 ms wide at the low end, so at millisecond latencies a
    ratio alone would fail canaries on the width of a bucket."""
    min_requests: int = Field(default=100, ge=1)
    """Fewer canary requests than this in the window gives "inconclusive": below about a
    hundred requests one failure moves the error rate by more than the 1 % limit, so the
    verdict would rest on a single request. The stable group needs as many before the
    relative checks (increase, p99 ratio) use it as the baseline."""
    promote_inconclusive: bool = False
    """Inconclusive counts as failed unless this is set. Promoting replaces the version that
    serves all traffic; a window without traffic is no evidence that the new one works, and
    rolling back costs nothing but a retry with more traffic or a longer window."""


# ---------------------------------------------------------------------------------------------
# One pod's counters


@dataclass(frozen=True)
class PodCounters:
    """The counters the analysis reads from one pod's ``/metrics``, summed over models.

    ``created`` holds each series' ``_created`` timestamp (prometheus_client exports one per
    labelled counter and histogram); a newer one means the process restarted.
    """

    outcomes: Mapping[str, float] = field(default_factory=dict)
    buckets: Mapping[float, float] = field(default_factory=dict)
    """Upper bound ``le`` → cumulative count, like a Prometheus histogram."""
    created: Mapping[str, float] = field(default_factory=dict)


def parse_metrics(text: str) -> PodCounters:
    """Read the request outcomes and the latency histogram from Prometheus text.

    Series for every model and version the pod serves are added up: the comparison is
    between versions of the deployment, not between models.
    """
    outcomes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    created: dict[str, float] = {}
    # The text format puts each ``_created`` series in a gauge family of its own.
    wanted = {REQUESTS, DURATION, REQUESTS + "_created", DURATION + "_created"}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                key = sample.name + repr(sorted(sample.labels.items()))
                created[key] = sample.value
            elif sample.name == REQUESTS + "_total":
                outcome = sample.labels.get("outcome", "")
                outcomes[outcome] = outcomes.get(outcome, 0.0) + sample.value
            elif sample.name == DURATION + "_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return PodCounters(outcomes, buckets, created)


def _restarted(start: PodCounters, end: PodCounters) -> bool:
    """True when the pod's process restarted between the snapshots: a counter went down, or
    a series was created again. (A restart followed by more traffic than before leaves every
    counter higher, which only the ``_created`` timestamps reveal.)"""
    if any(end.outcomes.get(k, 0.0) < v for k, v in start.outcomes.items()):
        return True
    if any(end.buckets.get(k, 0.0) < v for k, v in start.buckets.items()):
        return True
    return any(k in end.created and end.created[k] > v for k, v in start.created.items())


def window(start: PodCounters | None, end: PodCounters) -> PodCounters:
    """What one pod counted between two snapshots.

    A pod that restarted (or was not there at the start) counted from zero, so everything
    it shows at the end happened in the window: like Prometheus' ``increase()`` after a
    counter reset, this never goes negative. Traffic a restarted pod served before it died
    is lost, as it is for Prometheus.
    """
    if start is None or _restarted(start, end):
        return PodCounters(dict(end.outcomes), dict(end.buckets))
    return PodCounters(
        {k: v - start.outcomes.get(k, 0.0) for k, v in end.outcomes.items()},
        {k: v - start.buckets.get(k, 0.0) for k, v in end.buckets.items()},
    )


# ---------------------------------------------------------------------------------------------
# A group of pods (stable or canary) over the window


@dataclass(frozen=True)
class GroupStats:
    """One group's traffic over the window: what the report shows for stable and canary."""

    pods: int
    requests: float
    errors: float
    outcomes: Mapping[str, float]
    p50_s: float | None
    p99_s: float | None
    restarts: int = 0
    """Container restarts during the window, from the pods' status."""

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "pods": self.pods,
            "requests": int(self.requests),
            "errors": int(self.errors),
            "error_rate": self.error_rate,
            "p50_s": self.p50_s,
            "p99_s": self.p99_s,
            "restarts": self.restarts,
            "outcomes": {k: int(v) for k, v in sorted(self.outcomes.items())},
        }


def summarise(pods: Iterable[PodCounters], *, restarts: int = 0) -> GroupStats:
    """Add up the pods' windows (from ``window``) and read the group's rates and quantiles."""
    outcomes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    n = 0
    for pod in pods:
        n += 1
        for k, v in pod.outcomes.items():
            outcomes[k] = outcomes.get(k, 0.0) + v
        for le, v in pod.buckets.items():
            buckets[le] = buckets.get(le, 0.0) + v
    return GroupStats(
        pods=n,
        requests=sum(outcomes.values()),
        errors=sum(v for k, v in outcomes.items() if k in ERROR_OUTCOMES),
        outcomes=outcomes,
        p50_s=histogram_quantile(0.5, buckets),
        p99_s=histogram_quantile(0.99, buckets),
        restarts=restarts,
    )


# ---------------------------------------------------------------------------------------------
# The verdict


@dataclass(frozen=True)
class Comparison:
    """Stable against canary, the verdict and every reason for it."""

    stable: GroupStats
    canary: GroupStats
    verdict: Verdict
    reasons: tuple[str, ...]

    def promotes(self, thresholds: CanaryThresholds) -> bool:
        return self.verdict == "pass" or (
            self.verdict == "inconclusive" and thresholds.promote_inconclusive
        )


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.2f}%"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def compare(stable: GroupStats, canary: GroupStats, thresholds: CanaryThresholds) -> Comparison:
    """Judge the canary against the stable group.

    "fail" when any threshold is crossed (every crossed one is listed); "inconclusive" when
    the canary saw fewer than ``min_requests`` requests; "pass" otherwise. Failures win over
    too little traffic only when there is enough traffic to trust them, so a single early
    error does not condemn a canary that has served three requests.
    """
    t = thresholds
    if canary.requests < t.min_requests:
        return Comparison(
            stable,
            canary,
            "inconclusive",
            (
                f"the canary answered {int(canary.requests)} requests in the window, fewer "
                f"than the {t.min_requests} needed for a verdict; send more traffic, raise "
                "the weight or lengthen the window",
            ),
        )
    failures: list[str] = []
    notes: list[str] = []
    rate = canary.error_rate or 0.0
    if rate > t.max_error_rate:
        failures.append(
            f"canary error rate {_pct(rate)} is above the limit {_pct(t.max_error_rate)}"
        )
    baseline = stable.requests >= t.min_requests
    if baseline:
        stable_rate = stable.error_rate or 0.0
        if rate > stable_rate + t.max_error_rate_increase:
            failures.append(
                f"canary error rate {_pct(rate)} is more than "
                f"{_pct(t.max_error_rate_increase)} above the stable {_pct(stable_rate)}"
            )
        if canary.p99_s is not None and stable.p99_s is not None and stable.p99_s > 0:
            ratio = canary.p99_s / stable.p99_s
            if ratio > t.max_p99_ratio and canary.p99_s - stable.p99_s > t.p99_tolerance_s:
                failures.append(
                    f"canary p99 {_ms(canary.p99_s)} is {ratio:.2f}x the stable "
                    f"{_ms(stable.p99_s)} (limit {t.max_p99_ratio:g}x)"
                )
    else:
        notes.append(
            f"the stable version answered only {int(stable.requests)} requests, so only the "
            "absolute error-rate limit was checked"
        )
    if canary.restarts > 0:
        failures.append(f"canary containers restarted {canary.restarts} times in the window")
    if failures:
        return Comparison(stable, canary, "fail", (*failures, *notes))
    summary = (
        f"canary error rate {_pct(rate)} (stable {_pct(stable.error_rate)}), "
        f"p99 {_ms(canary.p99_s)} (stable {_ms(stable.p99_s)}) within the thresholds"
    )
    return Comparison(stable, canary, "pass", (summary, *notes))


# ---------------------------------------------------------------------------------------------
# Talking to the cluster


@dataclass(frozen=True)
class GroupSnapshot:
    """Every pod of one group at one moment: counters by pod name, restart counts by pod
    name, and the pods that could not be scraped (with why)."""

    counters: Mapping[str, PodCounters]
    restarts: Mapping[str, int]
    unreachable: Mapping[str, str] = field(default_factory=dict)


def group_window(start: GroupSnapshot, end: GroupSnapshot) -> GroupStats:
    """The group's stats between two snapshots; pods gone by the end are left out, pods
    new at the end count from zero (they started during the window)."""
    pods = [window(start.counters.get(name), c) for name, c in end.counters.items()]
    restarts = sum(max(0, n - start.restarts.get(name, 0)) for name, n in end.restarts.items())
    return summarise(pods, restarts=restarts)


def _http_port(pod: Mapping[str, Any], default: int) -> int:
    """The pod's container port named ``http`` (the server's REST port), else ``default``.
    The pod proxy needs the number: ``pod:port`` does not accept a port name."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "http" and port.get("containerPort"):
                return int(port["containerPort"])
    return default


def _labels_match(pod: Mapping[str, Any], selector: Mapping[str, str]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def snapshot_group(
    cluster: Cluster,
    namespace: str,
    selector: Mapping[str, str],
    *,
    default_port: int = 8000,
    timeout_s: float = 5.0,
) -> GroupSnapshot:
    """Scrape ``/metrics`` of every running pod matching ``selector`` through the API
    server's pod proxy (``GET /api/v1/namespaces/NS/pods/POD:PORT/proxy/metrics``).

    A pod that cannot be scraped (not running yet, proxy refused) is left out and listed in
    ``unreachable``; the caller decides whether the remaining pods are enough. Raises
    DeployError when the pods cannot be listed or the proxy is forbidden (RBAC).
    """
    from infership.errors import DeployError
    from infership.k8s.cluster import Forbidden, PodUnreachable

    label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    listed = cluster.list_objects("Pod", namespace, labels=label_selector)
    counters: dict[str, PodCounters] = {}
    restarts: dict[str, int] = {}
    unreachable: dict[str, str] = {}
    # Selectors are matched again here: they are the contract, and not every server (nor
    # every test double) filters on them.
    pods = [p for p in listed if _labels_match(p, selector)]
    for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
        name = str(pod["metadata"]["name"])
        status = pod.get("status") or {}
        restarts[name] = sum(
            int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or []
        )
        phase = status.get("phase")
        if phase != "Running" or pod["metadata"].get("deletionTimestamp"):
            unreachable[name] = f"phase {phase or 'unknown'}"
            continue
        port = _http_port(pod, default_port)
        try:
            text = cluster.proxy_get(namespace, name, port, "metrics", timeout_s=timeout_s)
            counters[name] = parse_metrics(text)
        except Forbidden as exc:
            # Every pod would answer the same: stop with what to fix.
            raise DeployError(
                f"{exc}; the canary analysis needs permission to get pods/proxy in this namespace"
            ) from exc
        except PodUnreachable as exc:
            unreachable[name] = str(exc)
        except ValueError as exc:  # text that is not Prometheus' format
            unreachable[name] = str(exc) or type(exc).__name__
    return GroupSnapshot(counters, restarts, unreachable)


def format_table(rows: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned columns, two spaces apart (the report's table)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
