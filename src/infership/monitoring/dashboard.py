"""The Grafana dashboard: traffic, errors, latency by stage, batching, queues, readiness."""

from __future__ import annotations

from typing import Any

UID = "infership-overview"
_SEL = 'model=~"$model"'
_RATE = "$__rate_interval"


def _quantiles(metric: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{_SEL}}}[{_RATE}])))",
            f"p{round(q * 100)}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


# (title, unit, [(PromQL, legend)], panel type, width): laid out left to right, 24 columns a row.
_PANELS: list[tuple[str, str, list[tuple[str, str]], str, int]] = [
    (
        "Requests / s by outcome", "reqps",
        [(f"sum by (outcome) (rate(infership_requests_total{{{_SEL}}}[{_RATE}]))", "{{outcome}}")],
        "timeseries", 12,
    ),
    (
        "Failed share (server and capacity errors)", "percentunit",
        [(
            "sum(rate(infership_requests_total{" + _SEL
            + ', outcome=~"server_error|capacity_error"}[' + _RATE + "]))"
            f" / sum(rate(infership_requests_total{{{_SEL}}}[{_RATE}]))",
            "failed",
        )],
        "timeseries", 12,
    ),
    ("Request latency", "s", _quantiles("infership_request_duration_seconds"), "timeseries", 12),
    (
        "p99 by stage", "s",
        [
            (
                f"histogram_quantile(0.99, sum by (le) (rate({metric}_bucket{{{_SEL}}}[{_RATE}])))",
                stage,
            )
            for stage, metric in (
                ("queue", "infership_queue_duration_seconds"),
                ("preprocess", "infership_preprocess_duration_seconds"),
                ("inference (batch)", "infership_inference_duration_seconds"),
                ("postprocess", "infership_postprocess_duration_seconds"),
            )
        ],
        "timeseries", 12,
    ),
    (
        "Rows per batch", "short",
        [
            (
                f"sum by (model) (rate(infership_batch_size_sum{{{_SEL}}}[{_RATE}]))"
                f" / sum by (model) (rate(infership_batch_size_count{{{_SEL}}}[{_RATE}]))",
                "mean {{model}}",
            ),
            *_quantiles("infership_batch_size")[2:],
        ],
        "timeseries", 8,
    ),
    (
        "Queue depth and requests in flight", "short",
        [
            (f"sum by (model) (infership_queue_depth{{{_SEL}}})", "queued {{model}}"),
            (f"sum by (model) (infership_inflight_requests{{{_SEL}}})", "in flight {{model}}"),
        ],
        "timeseries", 8,
    ),
    (
        "Model versions ready", "short",
        [(f"sum by (model, version) (infership_model_ready{{{_SEL}}})", "{{model}} v{{version}}")],
        "stat", 8,
    ),
    (
        "HTTP answers / s by status", "reqps",
        [("sum by (status) (rate(infership_http_requests_total[" + _RATE + "]))", "{{status}}")],
        "timeseries", 24,
    ),
]  # fmt: skip


def _panel(
    index: int, title: str, unit: str, queries: list[tuple[str, str]], kind: str, x: int, y: int
) -> dict[str, Any]:
    width = _PANELS[index][4]
    return {
        "id": index + 1,
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
            }
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def dashboard(title: str = "infership") -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (import it, or mount it with a ConfigMap)."""
    panels = []
    x = y = 0
    for index, (name, unit, queries, kind, width) in enumerate(_PANELS):
        if x + width > 24:
            x, y = 0, y + 8
        panels.append(_panel(index, name, unit, queries, kind, x, y))
        x += width
    return {
        "uid": UID,
        "title": title,
        "tags": ["infership", "inference"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "model",
                    "label": "Model",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": "label_values(infership_model_ready, model)",
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": panels,
    }
