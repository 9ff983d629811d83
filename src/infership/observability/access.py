"""One ASGI middleware around the REST app: request id in, request id out, one access-log line
and (with the ``otel`` extra) one server span per request.

It is plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: that one runs the endpoint in a
separate task and buffers streaming, which costs time on every inference call.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infership.observability.ids import REQUEST_ID, TraceParent, request_id_for
from infership.observability.tracing import Tracing

access_log = logging.getLogger("infership.access")
_WANTED = frozenset((b"x-request-id", b"traceparent", b"tracestate", b"user-agent"))


class RequestContextMiddleware:
    """Give every HTTP request an id, echo it as ``X-Request-Id`` and log the answer.

    The id is the caller's ``X-Request-Id`` when usable, else the trace id of its
    ``traceparent``, else a new one. ``Server-Timing: app;dur=<ms>`` tells a browser how long the
    server took, which the web page shows next to each answer.
    """

    def __init__(self, app: ASGIApp, *, access_log: bool = True, tracing: Tracing | None = None):
        self.app = app
        self.access_log = access_log
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        trace = TraceParent.parse(headers.get("traceparent"))
        request_id = request_id_for(headers.get("x-request-id"), trace)
        started = time.perf_counter()
        answer: dict[str, int] = {"status": 500, "bytes": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                elapsed_ms = (time.perf_counter() - started) * 1000
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                    (b"server-timing", f"app;dur={elapsed_ms:.2f}".encode()),
                ]
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            if self.tracing is None:
                await self.app(scope, receive, send_with_id)
            else:
                with self.tracing.server_span(scope, headers, answer):
                    await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            if self.access_log and access_log.isEnabledFor(logging.INFO):
                _log(scope, headers, request_id, trace, answer, time.perf_counter() - started)


def _headers(scope: Scope) -> dict[str, str]:
    # Only the headers we use, decoded once; latin-1 never fails on raw header bytes.
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            found[name.decode()] = value.decode("latin-1")
    return found


def _log(
    scope: Scope,
    headers: dict[str, str],
    request_id: str,
    trace: TraceParent | None,
    answer: dict[str, int],
    seconds: float,
) -> None:
    route = scope.get("route")
    client = scope.get("client")
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": scope["method"],
        "path": scope["path"],
        "route": getattr(route, "path", None),
        "status": answer["status"],
        "duration_ms": round(seconds * 1000, 3),
        "response_bytes": answer["bytes"],
        "client": f"{client[0]}:{client[1]}" if client else None,
        "user_agent": headers.get("user-agent"),
    }
    if trace is not None:
        fields["trace_id"] = trace.trace_id
        fields["parent_span_id"] = trace.parent_id
    # The fields go in as ``extra``: the JSON formatter writes each one as a top-level key.
    access_log.info(
        "%s %s %d %.1f ms id=%s",
        fields["method"], fields["path"], fields["status"], fields["duration_ms"], request_id,
        extra=fields,
    )  # fmt: skip
