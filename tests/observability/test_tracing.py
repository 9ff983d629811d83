"""OpenTelemetry spans around requests, continuing the caller's trace; off without the extra."""

from __future__ import annotations

import sys

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from infership.observability import RequestContextMiddleware
from infership.observability.tracing import Tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def item(request: Request) -> PlainTextResponse:
    if request.path_params["id"] == "broken":
        return PlainTextResponse("no", status_code=503)
    return PlainTextResponse("ok")


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(spans: InMemorySpanExporter) -> httpx.AsyncClient:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = Starlette(routes=[Route("/items/{id}", item)])
    wrapped = RequestContextMiddleware(app, access_log=False, tracing=Tracing(provider))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t")


async def test_a_request_is_one_server_span_in_the_callers_trace(
    traced: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    async with traced:
        response = await traced.get("/items/7", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    (span,) = spans.get_finished_spans()
    assert span.name == "GET /items/{id}"
    assert span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/items/{id}"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["url.path"] == "/items/7"


async def test_server_errors_mark_the_span_failed(
    traced: httpx.AsyncClient, spans: InMemorySpanExporter
) -> None:
    async with traced:
        assert (await traced.get("/items/broken")).status_code == 503
        assert (await traced.get("/elsewhere")).status_code == 404
    broken, unrouted = spans.get_finished_spans()
    assert broken.status.status_code == StatusCode.ERROR
    assert broken.parent is None  # no traceparent: a new trace
    assert unrouted.name == "GET"  # no route matched: no template to name it by
    assert unrouted.status.status_code == StatusCode.UNSET


def test_tracing_is_off_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    assert Tracing.if_configured() is None


def test_tracing_is_off_until_a_tracer_provider_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    assert Tracing.if_configured() is None
    monkeypatch.setattr(trace, "get_tracer_provider", TracerProvider)
    assert isinstance(Tracing.if_configured(), Tracing)
