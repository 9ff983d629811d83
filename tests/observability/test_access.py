"""The request-id middleware and access log, through the example app in-process."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from infership.observability.logs import JsonFormatter

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def access_lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="infership.access")
    return caplog


async def test_the_callers_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/health/ready", headers={"x-request-id": "order-7/item-2"})
    assert response.headers["x-request-id"] == "order-7/item-2"


async def test_a_request_without_id_gets_one(client: httpx.AsyncClient) -> None:
    first = (await client.get("/v2")).headers["x-request-id"]
    second = (await client.get("/v2")).headers["x-request-id"]
    assert len(first) == 32
    assert first != second


async def test_the_trace_id_becomes_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2", headers={"traceparent": TRACEPARENT})
    assert response.headers["x-request-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_server_timing_reports_the_time_taken(client: httpx.AsyncClient) -> None:
    timing = (await client.get("/v2")).headers["server-timing"]
    assert timing.startswith("app;dur=")
    assert float(timing.removeprefix("app;dur=")) >= 0


async def test_errors_carry_the_request_id_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/models/nope", headers={"x-request-id": "r-404"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "r-404"


async def test_one_access_log_line_per_request_with_its_fields(
    client: httpx.AsyncClient, chelsea: bytes, access_lines: pytest.LogCaptureFixture
) -> None:
    files = {"img": ("chelsea.jpg", chelsea, "image/jpeg")}
    headers = {"x-request-id": "cat-1", "traceparent": TRACEPARENT, "user-agent": "test/1"}
    response = await client.post(
        "/v2/models/efficientnet-lite0/predict", files=files, headers=headers
    )
    assert response.status_code == 200
    (record,) = [r for r in access_lines.records if getattr(r, "request_id", None) == "cat-1"]
    line = json.loads(JsonFormatter().format(record))
    assert line["logger"] == "infership.access"
    assert line["method"] == "POST"
    assert line["path"] == "/v2/models/efficientnet-lite0/predict"
    assert line["route"] == "/v2/models/{name}/predict"
    assert line["status"] == 200
    assert line["response_bytes"] == len(response.content)
    assert line["duration_ms"] > 0
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert line["parent_span_id"] == "00f067aa0ba902b7"
    assert line["user_agent"] == "test/1"
    assert "cat-1" in line["message"]


async def test_unrouted_paths_are_logged_without_a_route(
    client: httpx.AsyncClient, access_lines: pytest.LogCaptureFixture
) -> None:
    await client.get("/nowhere", headers={"x-request-id": "lost-1"})
    (record,) = [r for r in access_lines.records if getattr(r, "request_id", None) == "lost-1"]
    assert record.status == 404  # type: ignore[attr-defined]
    assert record.route is None  # type: ignore[attr-defined]
