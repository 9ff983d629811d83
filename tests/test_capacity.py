from __future__ import annotations

import pytest

from infership.bench.report import RunResult
from infership.bench.stats import LatencySummary
from infership.capacity import PlanError, plan


def run(c: int, rps: float, p99: float, errors: int = 0, cpu: float | None = None) -> RunResult:
    latency = LatencySummary(count=100, mean=1, p50=p99 / 2, p90=p99, p99=p99, max=p99)
    return RunResult(
        target="http://x", payload="upload", mode="closed", concurrency=c, duration_s=10,
        ok=int(rps * 10), errors={"http 503": errors} if errors else {}, throughput_rps=rps,
        latency_ms=latency, client_cpu=0.01, server_cpu=cpu,
    )  # fmt: skip


RUNS = [run(1, 100, 15), run(8, 160, 80), run(32, 170, 300)]


def test_replicas_follow_ceil_of_rate_times_service_time_over_concurrency_with_headroom() -> None:
    result = plan(RUNS, target_rps=1000, p99_budget_ms=100, headroom=0.2)
    # c=8 is the fastest run within 100 ms: t = 8 / 160 = 50 ms; 1000·0.05 / (8·0.8) = 7.8
    assert result.concurrency_per_replica == 8
    assert result.service_time_s == pytest.approx(0.05)
    assert result.replica_capacity_rps == 160
    assert result.replicas == 8
    assert result.hpa.min_replicas == 8
    assert result.hpa.max_replicas == 16  # default peak: twice the target
    assert result.hpa.target_cpu_utilization == 80


def test_a_looser_budget_uses_the_higher_concurrency() -> None:
    result = plan(RUNS, target_rps=340, p99_budget_ms=500, headroom=0)
    assert result.concurrency_per_replica == 32
    assert result.replicas == 2
    assert result.hpa.target_cpu_utilization == 100


def test_peak_rate_sets_the_autoscaler_maximum() -> None:
    result = plan(RUNS, target_rps=100, p99_budget_ms=20, headroom=0.5, peak_rps=1000)
    assert result.replicas == 2  # 100 · 0.01 / (1 · 0.5)
    assert result.hpa.max_replicas == 20


def test_cpu_request_is_what_a_replica_used_rounded_up_to_a_tenth_of_a_core() -> None:
    import os

    fraction = 0.7 / (os.cpu_count() or 1)  # 0.7 cores
    result = plan([run(8, 160, 80, cpu=fraction)], target_rps=100, p99_budget_ms=100)
    assert result.hpa.cpu_request_millicores == 700


def test_runs_with_errors_are_not_trusted() -> None:
    with pytest.raises(PlanError, match="had errors"):
        plan([run(8, 160, 80, errors=50)], target_rps=10, p99_budget_ms=100)


def test_an_impossible_budget_names_the_best_p99_measured() -> None:
    with pytest.raises(PlanError, match=r"lowest p99 was 15\.0 ms at c=1"):
        plan(RUNS, target_rps=10, p99_budget_ms=5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"target_rps": 0}, "positive"), ({"headroom": 1.0}, "headroom"),
     ({"peak_rps": 1.0}, "below the target")],
)  # fmt: skip
def test_bad_plan_inputs_are_refused(kwargs: dict, message: str) -> None:
    arguments = {"target_rps": 10.0, "p99_budget_ms": 100.0} | kwargs
    with pytest.raises(PlanError, match=message):
        plan(RUNS, **arguments)


def test_open_loop_results_alone_cannot_plan() -> None:
    open_run = RUNS[0].model_copy(update={"mode": "open", "concurrency": None, "rate": 50.0})
    with pytest.raises(PlanError, match="closed-loop"):
        plan([open_run], target_rps=10, p99_budget_ms=100)
