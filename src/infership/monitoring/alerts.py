"""Prometheus alert rules: failing requests, slow requests, a saturated queue, models not ready."""

from __future__ import annotations

from typing import Any, NamedTuple


class AlertThresholds(NamedTuple):
    """When the alerts fire. The defaults suit a CPU image classifier; tune them per service."""

    error_ratio: float = 0.05
    """Share of requests failing with server errors, over 5 minutes."""

    p99_seconds: float = 1.0
    """99th-percentile request latency, over 5 minutes."""

    capacity_ratio: float = 0.01
    """Share of requests refused for capacity (queue full, deadline passed, not ready)."""

    not_ready_for: str = "5m"
    """How long a model version may stay not ready (loading included) before it pages."""


DEFAULT_THRESHOLDS = AlertThresholds()


def _share(outcome: str) -> str:
    return (
        f'sum by (model) (rate(infership_requests_total{{outcome="{outcome}"}}[5m]))'
        " / sum by (model) (rate(infership_requests_total[5m]))"
    )


def alert_rules(thresholds: AlertThresholds = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """A Prometheus rules file (``groups: [...]``), also the spec of a PrometheusRule."""
    t = thresholds
    p99 = (
        "histogram_quantile(0.99, sum by (model, le) "
        "(rate(infership_request_duration_seconds_bucket[5m])))"
    )
    rules = [
        _rule(
            "InfershipHighErrorRate", f"{_share('server_error')} > {t.error_ratio}", "5m",
            "critical",
            "{{ $labels.model }}: {{ $value | humanizePercentage }} of requests fail",
            "Server errors mean the model or the runtime fails; the server log names the "
            "request ids.",
        ),
        _rule(
            "InfershipHighLatency", f"{p99} > {t.p99_seconds}", "10m", "warning",
            "{{ $labels.model }}: p99 latency is {{ $value | humanizeDuration }}",
            f"Requests take longer than {t.p99_seconds} s at the 99th percentile. Compare queue "
            "and inference time on the dashboard: add replicas if the queue grows.",
        ),
        _rule(
            "InfershipQueueSaturated", f"{_share('capacity_error')} > {t.capacity_ratio}", "5m",
            "warning",
            "{{ $labels.model }}: {{ $value | humanizePercentage }} of requests are refused "
            "for capacity",
            "The batching queue is full or deadlines pass while requests wait (503/504 "
            "answers). Add replicas or raise max_queue_size.",
        ),
        _rule(
            "InfershipModelNotReady", "infership_model_ready == 0", t.not_ready_for, "critical",
            "{{ $labels.model }} version {{ $labels.version }} is not ready",
            "The model version does not serve requests; the repository index "
            "(POST /v2/repository/index) gives the reason.",
        ),
    ]  # fmt: skip
    return {"groups": [{"name": "infership", "rules": rules}]}


def _rule(
    name: str, expr: str, for_: str, severity: str, summary: str, description: str
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary, "description": description},
    }
