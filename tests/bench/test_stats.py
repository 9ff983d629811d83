from __future__ import annotations

import pytest

from infership.bench.stats import summarize


def test_percentiles_are_nearest_rank_values_that_occurred() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    summary = summarize(latencies)
    assert summary is not None
    assert (summary.p50, summary.p90, summary.p99, summary.max) == pytest.approx((50, 90, 99, 100))
    assert summary.count == 100
    assert summary.mean == pytest.approx(50.5)


def test_p99_of_a_small_sample_is_its_worst_latency_not_an_interpolation() -> None:
    summary = summarize([0.001] * 9 + [0.5])
    assert summary is not None
    assert summary.p99 == pytest.approx(500)
    assert summary.p50 == pytest.approx(1)


def test_no_latencies_give_no_summary() -> None:
    assert summarize([]) is None
