"""Capacity planning: replicas and autoscaler settings from a measured benchmark.

A replica measured at concurrency ``k`` (requests in flight) answering ``X`` requests/s spends
``t = k / X`` seconds per request (Little's law; ``t`` is the mean latency). A target rate
``C`` then needs ``C·t / k`` replicas running flat out. Keeping a fraction ``headroom`` of every
replica free, for bursts and for the time the autoscaler takes to react, gives

    replicas = ceil(C·t / (k · (1 − headroom)))

Only measurements whose p99 meets the latency budget count, and among those the one with the
highest throughput is used: the budget, not the hardware, then sets ``k``.

The HorizontalPodAutoscaler keeps ``replicas`` as its minimum (the target rate is served
without waiting for a scale-up), scales to ``peak_rate`` at most, and targets the CPU
utilisation at which a replica still has its headroom: ``(1 − headroom)`` of a CPU request set
to what the replica used at the chosen load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from infership.bench.report import RunResult, load_label
from infership.capacity_plan import CapacityPlan, HpaSettings

__all__ = ["CapacityPlan", "HpaSettings", "PlanError", "plan"]


class PlanError(ValueError):
    """No measurement supports the plan (the message says which budget failed and why)."""


def plan(
    runs: Sequence[RunResult],
    *,
    target_rps: float,
    p99_budget_ms: float,
    headroom: float = 0.3,
    peak_rps: float | None = None,
    max_error_rate: float = 0.001,
) -> CapacityPlan:
    """Plan replicas for ``target_rps`` from closed-loop ``runs`` of one replica.

    Raises PlanError when no run meets the budget. ``peak_rps`` (default twice the target)
    sets the autoscaler's maximum.
    """
    if target_rps <= 0 or p99_budget_ms <= 0:
        raise PlanError("the target rate and the p99 budget must be positive")
    if not 0 <= headroom < 1:
        raise PlanError(f"headroom is a fraction of capacity in [0, 1), got {headroom}")
    peak = 2 * target_rps if peak_rps is None else peak_rps
    if peak < target_rps:
        raise PlanError(f"the peak rate ({peak:g}/s) is below the target rate ({target_rps:g}/s)")
    best = _best_within_budget(runs, p99_budget_ms, max_error_rate)
    assert best.concurrency is not None
    assert best.latency_ms is not None
    k = best.concurrency
    capacity = best.throughput_rps
    t = k / capacity
    usable = k * (1 - headroom)
    replicas = math.ceil(target_rps * t / usable)
    cpu = None
    if best.server_cpu is not None and best.server_cpu > 0:
        from os import cpu_count

        # server_cpu is a fraction of the bench machine's cores; a request is in millicores.
        cpu = math.ceil(best.server_cpu * (cpu_count() or 1) * 10) * 100
    hpa = HpaSettings(
        min_replicas=replicas,
        max_replicas=max(replicas, math.ceil(peak * t / usable)),
        target_cpu_utilization=max(1, round(100 * (1 - headroom))),
        cpu_request_millicores=cpu,
    )
    return CapacityPlan(
        target_rps=target_rps,
        p99_budget_ms=p99_budget_ms,
        headroom=headroom,
        measured=f"{best.payload} {load_label(best)} on {best.target}",
        measured_p99_ms=best.latency_ms.p99,
        concurrency_per_replica=k,
        service_time_s=t,
        replica_capacity_rps=capacity,
        replicas=replicas,
        hpa=hpa,
    )


def _best_within_budget(
    runs: Sequence[RunResult], p99_budget_ms: float, max_error_rate: float
) -> RunResult:
    closed = [r for r in runs if r.mode == "closed" and r.latency_ms is not None]
    if not closed:
        raise PlanError("the benchmark has no closed-loop run with answers; run bench with -c")
    healthy = [r for r in closed if r.error_count <= max_error_rate * (r.ok + r.error_count)]
    if not healthy:
        raise PlanError("every closed-loop run had errors; fix them before planning")
    within = [r for r in healthy if r.latency_ms and r.latency_ms.p99 <= p99_budget_ms]
    if not within:
        fastest = min(healthy, key=lambda r: r.latency_ms.p99 if r.latency_ms else math.inf)
        assert fastest.latency_ms is not None
        raise PlanError(
            f"no run meets the p99 budget of {p99_budget_ms:g} ms: the lowest p99 was "
            f"{fastest.latency_ms.p99:.1f} ms at {load_label(fastest)}; raise the budget, or "
            "make each request cheaper"
        )
    return max(within, key=lambda r: r.throughput_rps)
