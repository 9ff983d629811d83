"""What a deployment needs to watch one request: request ids, access logs, logs as JSON lines,
and OpenTelemetry spans when the ``otel`` extra is installed."""

from __future__ import annotations

from infership.observability.access import RequestContextMiddleware
from infership.observability.ids import REQUEST_ID, TraceParent, request_id_for
from infership.observability.logs import JsonFormatter

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "RequestContextMiddleware",
    "TraceParent",
    "request_id_for",
]
