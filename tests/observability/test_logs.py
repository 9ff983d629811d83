"""Log lines as JSON objects, and the middleware's edges."""

from __future__ import annotations

import json
import logging
import sys

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from conftest import start_server, stop_server
from infership.observability import REQUEST_ID, JsonFormatter, RequestContextMiddleware


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("infership.test", logging.WARNING, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_record_is_one_json_object_with_its_extra_fields() -> None:
    line = JsonFormatter().format(record("loaded %s", "m", model="m", seconds=1.5))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "warning"
    assert doc["logger"] == "infership.test"
    assert doc["message"] == "loaded m"
    assert doc["model"] == "m"
    assert doc["seconds"] == 1.5
    assert doc["ts"].endswith("Z")
    assert "request_id" not in doc


def test_lines_written_while_serving_a_request_carry_its_id() -> None:
    token = REQUEST_ID.set("req-9")
    try:
        doc = json.loads(JsonFormatter().format(record("failed")))
    finally:
        REQUEST_ID.reset(token)
    assert doc["request_id"] == "req-9"


def test_exceptions_and_odd_values_are_written_as_text() -> None:
    try:
        raise ValueError("bad tensor")
    except ValueError:
        rec = record("boom", path=object())
        rec.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(rec))
    assert "ValueError: bad tensor" in doc["exception"]
    assert doc["path"].startswith("<object object")
    rec = record("where")
    rec.stack_info = "Stack (most recent call last): here"
    assert "here" in json.loads(JsonFormatter().format(rec))["stack"]


async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("no answer")


async def test_a_request_that_raises_is_logged_as_500(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="infership.access")
    app = RequestContextMiddleware(failing_app)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/x")).status_code == 500
    (line,) = [r for r in caplog.records if r.name == "infership.access"]
    assert line.status == 500  # type: ignore[attr-defined]


async def test_no_access_log_when_switched_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="infership.access")

    async def ok(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = RequestContextMiddleware(ok, access_log=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/x")
    assert response.status_code == 204
    assert "x-request-id" in response.headers
    assert not [r for r in caplog.records if r.name == "infership.access"]


async def test_other_scopes_pass_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def nothing() -> dict[str, str]:
        return {"type": "lifespan.startup"}

    async def drop(message: object) -> None:
        pass

    await RequestContextMiddleware(app)({"type": "lifespan"}, nothing, drop)
    assert seen == ["lifespan"]


@pytest.mark.e2e
def test_serve_log_format_json_writes_json_access_lines() -> None:
    server = start_server("--log-format", "json")
    try:
        response = httpx.get(f"{server.url}/v2/health/live", headers={"x-request-id": "probe-1"})
        assert response.headers["x-request-id"] == "probe-1"
    finally:
        output = stop_server(server)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert lines, output
    assert len(lines) == len([line for line in output.splitlines() if line.strip()]), output
    (access,) = [d for d in lines if d.get("request_id") == "probe-1"]
    assert access["logger"] == "infership.access"
    assert access["route"] == "/v2/health/live"
    assert any("ready" in d["message"] for d in lines)
