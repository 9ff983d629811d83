"""Latency percentiles and the summary of one run.

Percentiles use the nearest-rank definition (numpy's ``inverted_cdf``): the reported p99 is a
latency some request really had, never an interpolation between two, and it never flatters the
tail.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

PERCENTILES = (50, 90, 99)


class LatencySummary(BaseModel):
    """Latencies of a set of requests of one run (the answered ones, or the failed ones), in
    milliseconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float


def summarize(latencies_s: Sequence[float]) -> LatencySummary | None:
    """Summarize latencies given in seconds; None when there are none.

    >>> summarize([0.001, 0.002, 0.003, 0.004]).p50
    2.0
    """
    if not latencies_s:
        return None
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, PERCENTILES, method="inverted_cdf")
    return LatencySummary(
        count=len(ms),
        mean=float(ms.mean()),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        max=float(ms.max()),
    )
