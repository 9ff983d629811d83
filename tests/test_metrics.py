"""Reading the server's histograms the way Prometheus does (used by the canary and the overload
benchmark)."""

from __future__ import annotations

import math

import pytest

from infership.metrics import histogram_quantile


def test_histogram_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    # 100 observations: 50 in (0, 0.005], 50 in (0.005, 0.01]. Prometheus:
    # rank 99 lies 49/50 of the way through the second bucket -> 0.005 + 0.005 * 0.98.
    buckets = {0.005: 50.0, 0.01: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.0099)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.005)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.0025)  # first bucket from 0


def test_histogram_quantile_in_the_inf_bucket_answers_the_highest_bound() -> None:
    assert histogram_quantile(0.99, {1.0: 10.0, math.inf: 100.0}) == 1.0


def test_histogram_quantile_without_observations_is_none() -> None:
    assert histogram_quantile(0.99, {0.1: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.99, {}) is None
