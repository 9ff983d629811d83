"""OpenTelemetry server spans, when the ``otel`` extra is installed; nothing otherwise.

infership only creates spans through the OpenTelemetry API. Where they go is the SDK's
business: run the server under ``opentelemetry-instrument`` (with ``OTEL_*`` variables), or
install a tracer provider before starting ``Server`` in your own process. Without one, no
span is opened at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from starlette.types import Scope


class Tracing:
    """Opens one SERVER span per HTTP request, continuing the caller's ``traceparent``."""

    def __init__(self, provider: Any = None) -> None:
        """Spans go to ``provider`` (an OpenTelemetry TracerProvider), by default the global one.
        Raises ImportError without ``opentelemetry-api``."""
        from opentelemetry import propagate, trace

        from infership import __version__

        self._extract = propagate.extract
        self._server = trace.SpanKind.SERVER
        self._error = trace.Status(trace.StatusCode.ERROR)
        self._tracer = trace.get_tracer("infership", __version__, tracer_provider=provider)

    @classmethod
    def if_configured(cls) -> Tracing | None:
        """A Tracing when ``opentelemetry-api`` is installed and a tracer provider is set (by
        ``opentelemetry-instrument`` or the embedding program), else None: without a provider
        every span is a no-op that still costs about 25 µs per request."""
        try:
            from opentelemetry import trace
        except ImportError:
            return None
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return None
        return cls()

    @contextlib.contextmanager
    def server_span(
        self, scope: Scope, headers: dict[str, str], answer: dict[str, int]
    ) -> Iterator[None]:
        """A span around the request; named by route template once routing has happened."""
        parent = self._extract(headers)
        method = scope["method"]
        with self._tracer.start_as_current_span(
            method, context=parent, kind=self._server, attributes=_request_attributes(scope)
        ) as span:
            try:
                yield
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", answer["status"])
                if answer["status"] >= 500:
                    span.set_status(self._error)


def _request_attributes(scope: Scope) -> dict[str, Any]:
    # OpenTelemetry's HTTP semantic conventions (stable names).
    attributes: dict[str, Any] = {
        "http.request.method": scope["method"],
        "url.path": scope["path"],
        "url.scheme": scope.get("scheme", "http"),
    }
    if scope.get("server"):
        attributes["server.port"] = scope["server"][1]
    return attributes
