"""What ``infership plan --json`` writes and ``manifests --plan`` reads: ``CapacityPlan``.

Data only, apart from the planning (``capacity.py``) that measures it: rendering manifests from
a plan must not import the benchmark's load generator.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HpaSettings(BaseModel):
    """What ``autoscaling/v2`` HorizontalPodAutoscaler needs; consumed by the manifests code."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)
    target_cpu_utilization: int = Field(ge=1, le=100)
    """Percent of the CPU request (``metrics[].resource.target.averageUtilization``)."""
    cpu_request_millicores: int | None = None
    """CPU request per replica: what one replica used at the chosen load, when measured."""


class CapacityPlan(BaseModel):
    """Replicas needed for a target rate within a p99 budget, and the autoscaler settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_rps: float
    p99_budget_ms: float
    headroom: float
    measured: str
    """The benchmark run the plan rests on (payload and load)."""
    measured_p99_ms: float
    concurrency_per_replica: int
    """k: requests in flight per replica at the chosen load."""
    service_time_s: float
    """t = k / X: seconds per request at that concurrency (the mean latency)."""
    replica_capacity_rps: float
    """X = k / t: requests/s one replica sustains within the budget."""
    replicas: int
    hpa: HpaSettings
