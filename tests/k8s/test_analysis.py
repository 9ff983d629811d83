"""Canary analysis on metrics text produced by the server's own registry (infership.metrics)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest

from infership.k8s.analysis import (
    CanaryThresholds,
    GroupSnapshot,
    GroupStats,
    PodCounters,
    compare,
    group_window,
    parse_metrics,
    summarise,
    window,
)
from infership.metrics import Metrics


class Pod:
    """One server's metrics: record traffic, then read /metrics as the pod proxy returns it."""

    def __init__(self, model: str = "resnet", version: str = "1") -> None:
        self.metrics = Metrics()
        self.model = self.metrics.model(model, version)

    def serve(self, n: int, *, seconds: float = 0.004, outcome: str = "success") -> Pod:
        for _ in range(n):
            if outcome == "success":
                self.model.request_seconds.observe(seconds)
            self.model.outcome(outcome)
        return self

    def text(self) -> str:
        return generate_latest(self.metrics.registry).decode()

    def counters(self) -> PodCounters:
        return parse_metrics(self.text())


def test_parse_metrics_sums_outcomes_and_buckets_over_models() -> None:
    metrics = Metrics()
    a, b = metrics.model("resnet", "1"), metrics.model("bert", "2")
    for m, seconds in ((a, 0.003), (b, 0.2)):
        m.request_seconds.observe(seconds)
        m.outcome("success")
    a.outcome("server_error")
    b.outcome("client_error")

    c = parse_metrics(generate_latest(metrics.registry).decode())

    assert c.outcomes["success"] == 2
    assert c.outcomes["server_error"] == 1
    assert c.outcomes["client_error"] == 1
    assert c.buckets[0.005] == 1  # resnet's 3 ms
    assert c.buckets[0.25] == 2  # and bert's 200 ms
    assert c.buckets[math.inf] == 2
    assert c.created  # restart detection has timestamps to compare


def test_window_subtracts_start_from_end() -> None:
    pod = Pod().serve(10)
    start = pod.counters()
    pod.serve(5).serve(2, outcome="server_error")

    w = window(start, pod.counters())

    assert w.outcomes["success"] == 5
    assert w.outcomes["server_error"] == 2
    assert w.buckets[math.inf] == 5


def test_window_after_a_restart_counts_from_zero_not_negative() -> None:
    before = Pod().serve(100)
    start = before.counters()
    restarted = Pod().serve(7)  # a fresh process: counters begin again at 0

    w = window(start, restarted.counters())

    assert w.outcomes["success"] == 7
    assert all(v >= 0 for v in (*w.outcomes.values(), *w.buckets.values()))


def test_window_detects_a_restart_that_served_more_than_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Counters higher at the end than at the start, yet the process is new: only the
    # _created timestamps tell, and subtracting would lose 3 of the new process' 8 requests.
    monkeypatch.setattr("time.time", lambda: 1_000_000.0)
    start = Pod().serve(3).counters()
    monkeypatch.setattr("time.time", lambda: 1_000_060.0)  # the pod came back a minute later
    end = Pod().serve(8).counters()

    assert window(start, end).outcomes["success"] == 8
    assert window(end, end).outcomes["success"] == 0  # same process: nothing new


def test_window_of_a_pod_new_in_the_window_is_everything_it_counted() -> None:
    assert window(None, Pod().serve(4).counters()).outcomes["success"] == 4


def test_summarise_counts_server_and_capacity_errors_but_not_client_errors() -> None:
    pod = Pod()
    pod.serve(90)
    pod.serve(4, outcome="server_error")  # 500: the server failed
    pod.serve(2, outcome="capacity_error")  # 503/504: it could not keep up
    pod.serve(3, outcome="client_error")  # 4xx: the caller's fault, same for both versions
    pod.serve(1, outcome="cancelled")  # the caller went away

    stats = summarise([pod.counters()])

    assert stats.requests == 100
    assert stats.errors == 6
    assert stats.error_rate == pytest.approx(0.06)


def test_summarise_reads_p99_from_the_real_latency_buckets() -> None:
    pod = Pod().serve(99, seconds=0.004).serve(1, seconds=0.6)
    stats = summarise([pod.counters()])
    # The 99th of 100 observations is the last in (0.0025, 0.005]: 99 of 99 through it.
    assert stats.p99_s == pytest.approx(0.005)
    assert stats.p50_s is not None
    assert 0.0025 < stats.p50_s < 0.005


def test_summarise_adds_pods_of_a_group() -> None:
    stats = summarise([Pod().serve(30).counters(), Pod().serve(20).counters()])
    assert stats.pods == 2
    assert stats.requests == 50


def _stats(requests: int, errors: int = 0, p99_s: float | None = 0.004) -> GroupStats:
    return GroupStats(
        pods=1,
        requests=requests,
        errors=errors,
        outcomes={"success": requests - errors, "server_error": errors},
        p50_s=p99_s,
        p99_s=p99_s,
    )


def test_compare_passes_a_canary_like_the_stable_one() -> None:
    stable = summarise([Pod().serve(900).counters()])
    canary = summarise([Pod().serve(150).counters()])
    result = compare(stable, canary, CanaryThresholds())
    assert result.verdict == "pass"
    assert result.promotes(CanaryThresholds())


def test_compare_fails_a_canary_above_the_absolute_error_rate() -> None:
    stable = summarise([Pod().serve(900).counters()])
    canary = summarise([Pod().serve(140).serve(10, outcome="server_error").counters()])

    result = compare(stable, canary, CanaryThresholds())

    assert result.verdict == "fail"
    assert "6.67%" in result.reasons[0]
    assert not result.promotes(CanaryThresholds(promote_inconclusive=True))


def test_compare_fails_a_canary_worse_than_stable_by_more_than_the_increase() -> None:
    thresholds = CanaryThresholds(max_error_rate=0.5, max_error_rate_increase=0.01)
    result = compare(_stats(1000, errors=10), _stats(200, errors=6), thresholds)  # 1 % vs 3 %
    assert result.verdict == "fail"
    assert "above the stable 1.00%" in result.reasons[0]
    # the same canary passes when the stable version is as bad
    assert compare(_stats(1000, errors=30), _stats(200, errors=6), thresholds).verdict == "pass"


def test_compare_fails_a_slower_canary_on_the_p99_ratio() -> None:
    stable = summarise([Pod().serve(900, seconds=0.02).counters()])
    canary = summarise([Pod().serve(200, seconds=0.2).counters()])
    result = compare(stable, canary, CanaryThresholds())
    assert result.verdict == "fail"
    assert "p99" in result.reasons[0]


def test_compare_ignores_a_p99_ratio_within_the_tolerance() -> None:
    # 2 ms against 4 ms is twice as slow but within one 2.5 ms bucket of the histogram.
    result = compare(_stats(500, p99_s=0.002), _stats(200, p99_s=0.004), CanaryThresholds())
    assert result.verdict == "pass"


def test_compare_with_too_few_canary_requests_is_inconclusive_and_not_promoted() -> None:
    stable = summarise([Pod().serve(900).counters()])
    canary = summarise([Pod().serve(20).serve(5, outcome="server_error").counters()])

    result = compare(stable, canary, CanaryThresholds())

    assert result.verdict == "inconclusive"
    assert "25 requests" in result.reasons[0]
    assert not result.promotes(CanaryThresholds())
    assert result.promotes(CanaryThresholds(promote_inconclusive=True))


def test_compare_without_a_stable_baseline_checks_only_the_absolute_limit() -> None:
    result = compare(_stats(10, p99_s=0.001), _stats(300, p99_s=0.5), CanaryThresholds())
    assert result.verdict == "pass"  # no baseline to say 500 ms is slow
    assert "only the absolute error-rate limit" in result.reasons[-1]


def test_compare_fails_a_canary_whose_containers_restarted() -> None:
    pod = Pod().serve(300)
    snapshot = GroupSnapshot({"c-1": pod.counters()}, {"c-1": 0})
    pod.serve(200)
    later = GroupSnapshot({"c-1": pod.counters()}, {"c-1": 2})

    canary = group_window(snapshot, later)
    result = compare(_stats(1000), canary, CanaryThresholds())

    assert canary.requests == 200
    assert canary.restarts == 2
    assert result.verdict == "fail"
    assert "restarted 2 times" in result.reasons[0]


def test_group_window_leaves_out_pods_gone_and_counts_new_pods_from_zero() -> None:
    old, kept, new = Pod().serve(50), Pod().serve(10), Pod()
    start = GroupSnapshot({"old": old.counters(), "kept": kept.counters()}, {"old": 0, "kept": 0})
    kept.serve(5)
    new.serve(7)
    end = GroupSnapshot({"kept": kept.counters(), "new": new.counters()}, {"kept": 0, "new": 0})

    stats = group_window(start, end)

    assert stats.pods == 2
    assert stats.requests == 12


def test_thresholds_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="max_p99_ratio"):
        CanaryThresholds(max_p99_ratio=0.5)
    with pytest.raises(ValueError, match="max_error_rate"):
        CanaryThresholds(max_error_rate=2)
