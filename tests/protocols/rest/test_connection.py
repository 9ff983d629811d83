"""Slow and oversized requests are cut off, so they cannot hold the server's connection slots."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from conftest import free_port
from infership.protocols.rest.connection import (
    HEAD_GRACE_S,
    GuardedHttpProtocol,
    _Coalescing,
    _Watchdog,
)

TIMEOUT = 0.3


async def echo(request: Request) -> PlainTextResponse:
    try:
        return PlainTextResponse(f"got {len(await request.body())} bytes")
    except ClientDisconnect:
        return PlainTextResponse("the server closed the connection", 499)


@contextlib.asynccontextmanager
async def serving(
    endpoint: Callable[[Request], Awaitable[PlainTextResponse]],
    protocol: type[GuardedHttpProtocol],
    limit: int,
) -> AsyncIterator[int]:
    """A uvicorn server on a free port with ``protocol``, answering POST / with ``endpoint``."""
    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[Route("/", endpoint, methods=["POST"])]),
        host="127.0.0.1",
        port=port,
        http=protocol,
        lifespan="off",
        log_config=None,
        limit_concurrency=limit,
    )
    server = uvicorn.Server(config)
    running = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn only offers a flag
        await asyncio.sleep(0.01)
    yield port
    server.should_exit = True
    await running


@pytest.fixture
async def port() -> AsyncIterator[int]:
    protocol = GuardedHttpProtocol.configured(
        header_timeout_s=TIMEOUT, body_timeout_s=TIMEOUT, max_header_bytes=1024
    )
    async with serving(echo, protocol, limit=4) as port:
        yield port


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(0.5)
    return PlainTextResponse("slow")


@pytest.fixture
async def busy_port() -> AsyncIterator[int]:
    """A server whose every request takes 0.5 s, two connections per address at most."""
    protocol = GuardedHttpProtocol.configured(
        header_timeout_s=5, body_timeout_s=5, max_header_bytes=1024, max_per_client=2
    )
    async with serving(slow, protocol, limit=8) as port:
        yield port


async def exchange(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` with ``pause`` between them, stopping early (as a real client would) once
    the server answers; return all it sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        answered = asyncio.ensure_future(reader.read(65536))
        for part in parts:
            if answered.done():
                break
            writer.write(part)
            await writer.drain()
            await asyncio.wait({answered}, timeout=pause)
        first = await asyncio.wait_for(answered, timeout=5)
        return first + await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()


def request(body: bytes = b"hello", **headers: str) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
        f"connection: close\r\n{head}\r\n"
    ).encode() + body


async def test_a_well_behaved_request_in_several_packets_is_answered(port: int) -> None:
    raw = request()
    answer = await exchange(port, raw[:10], raw[10:30], raw[30:], pause=TIMEOUT / 10)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"got 5 bytes")


async def test_a_connection_that_sends_nothing_is_closed_with_408(port: int) -> None:
    started = time.monotonic()
    answer = await exchange(port)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"request headers did not arrive within 0.3 s" in answer
    assert time.monotonic() - started < 3


async def test_headers_sent_a_byte_at_a_time_slowloris_are_cut_off(port: int) -> None:
    raw = request()
    answer = await exchange(port, *(raw[i : i + 1] for i in range(len(raw))), pause=TIMEOUT / 5)
    assert answer.startswith(b"HTTP/1.1 408")


async def test_a_body_sent_at_a_trickle_is_cut_off(port: int) -> None:
    raw = request(b"x" * 20)
    head = raw[: raw.index(b"\r\n\r\n") + 4]
    answer = await exchange(port, head, *(b"x" for _ in range(20)), pause=TIMEOUT / 5)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"the request body did not arrive" in answer


async def test_oversized_headers_get_431(port: int) -> None:
    answer = await exchange(port, request(cookie="c" * 2000))
    assert answer.startswith(b"HTTP/1.1 431")
    assert b"over the limit of 1024 bytes" in answer


async def test_idle_connections_cannot_lock_out_other_clients(port: int) -> None:
    # limit_concurrency is 4: four silent connections would make uvicorn answer 503 for ever.
    hogs = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    try:
        await asyncio.sleep(TIMEOUT * 2)
        answer = await exchange(port, request())
        assert answer.startswith(b"HTTP/1.1 200")
    finally:
        for _, writer in hogs:
            writer.close()


async def test_a_kept_alive_connection_serves_requests_spaced_within_the_timeout(
    port: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(3):
            writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
            status = await asyncio.wait_for(reader.readline(), timeout=5)
            assert status.startswith(b"HTTP/1.1 200")
            await asyncio.wait_for(reader.readuntil(b"got 2 bytes"), timeout=5)
            await asyncio.sleep(TIMEOUT / 2)
    finally:
        writer.close()


async def _kept_alive(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has had one answer and is now idle, kept alive."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
    await asyncio.wait_for(reader.readuntil(b"got 2 bytes"), timeout=5)
    return reader, writer


async def test_idle_kept_alive_connections_make_room_for_a_new_request_at_the_cap(
    port: int,
) -> None:
    # The cap is 4 and each address may hold 2: polling clients that keep their connections
    # open must not turn requests away (F4: 260 health pollers made inference answer 503).
    pollers = [await _kept_alive(port) for _ in range(4)]
    try:
        for _ in range(3):
            answer = await exchange(port, request())
            assert answer.startswith(b"HTTP/1.1 200"), answer
        closed = [reader.at_eof() or await reader.read() == b"" for reader, _ in pollers[:2]]
        assert all(closed)  # the longest idle went first
    finally:
        for _, writer in pollers:
            writer.close()


async def test_a_connection_slow_with_its_head_makes_room_at_the_cap(busy_port: int) -> None:
    hogs = [await asyncio.open_connection("127.0.0.1", busy_port) for _ in range(2)]
    try:
        for _, writer in hogs:
            writer.write(b"POST / HTTP/1.1\r\nhost")  # a head begun, and never finished
        await asyncio.sleep(HEAD_GRACE_S + 0.2)  # well within the 5 s head timeout
        answer = await exchange(busy_port, request())
        assert answer.startswith(b"HTTP/1.1 200"), answer
    finally:
        for _, writer in hogs:
            writer.close()


async def test_at_the_cap_with_no_idle_connection_the_answer_is_json_503_with_retry_after(
    busy_port: int,
) -> None:
    busy = [asyncio.ensure_future(exchange(busy_port, request())) for _ in range(2)]
    await asyncio.sleep(0.2)  # both in flight: the address holds its two connections
    answer = await exchange(busy_port, request())
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503")
    assert b"content-type: application/json" in head
    assert b"retry-after: 1" in head
    assert b"connections open" in body
    for answered in busy:
        assert (await answered).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"\x16\x03\x01 not http\r\n\r\n", b"400", b"malformed HTTP request"),
        (
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
            b"501",
            b"Transfer-Encoding 'gzip, chunked' is not supported",
        ),
        (request(cookie="c" * 2000), b"431", b"over the limit of 1024 bytes"),
    ],
    ids=["not-http", "gzip-transfer-coding", "huge-head"],
)
async def test_connection_level_refusals_are_json_errors(
    port: int, raw: bytes, status: bytes, message: bytes
) -> None:
    head, body = (await exchange(port, raw)).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 " + status)
    assert b"content-type: application/json" in head
    assert message in orjson.loads(body)["error"].encode()


class _RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"info {name}"


async def test_a_response_head_and_its_small_body_leave_in_one_write() -> None:
    raw = _RecordingTransport()
    transport = _Coalescing(raw, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"ok")
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    await asyncio.sleep(0)
    assert len(raw.writes) == 1  # nothing left for the loop's next turn


async def test_a_lone_write_leaves_on_the_event_loops_next_turn() -> None:
    raw = _RecordingTransport()
    transport = _Coalescing(raw, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert raw.writes == []
    await asyncio.sleep(0)
    assert raw.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"]


async def test_a_large_body_is_not_copied_and_keeps_its_order() -> None:
    raw = _RecordingTransport()
    transport = _Coalescing(raw, asyncio.get_running_loop())
    large = b"x" * (_Coalescing.JOIN_BYTES + 1)
    transport.write(b"head")
    transport.write(large)
    transport.write(large)
    assert raw.writes == [b"head", large, large]


async def test_closing_sends_what_is_held_first_and_a_gone_client_gets_nothing() -> None:
    raw = _RecordingTransport()
    transport = _Coalescing(raw, asyncio.get_running_loop())
    transport.write(b"answer")
    transport.close()
    assert raw.writes == [b"answer"]
    assert raw.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing to send, and does not write

    gone = _RecordingTransport()
    transport = _Coalescing(gone, asyncio.get_running_loop())
    transport.write(b"late")
    gone.closed = True  # the client disconnected before the loop's next turn
    await asyncio.sleep(0)
    assert gone.writes == []
    assert transport.get_extra_info("peername") == "info peername"


async def test_pipelined_requests_get_every_answer_in_order(port: int) -> None:
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"".join(request % n + b"a" * n for n in (1, 22, 333)))
        await writer.drain()
        answers = b""
        while answers.count(b"bytes") < 3:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, f"closed after {answers!r}"
            answers += chunk
    finally:
        writer.close()
    assert re.findall(rb"got \d+ bytes", answers) == [
        b"got 1 bytes",
        b"got 22 bytes",
        b"got 333 bytes",
    ]


class _Connection:
    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        self.loop = loop
        self.deadline = deadline
        self.checked: list[float] = []

    def check_deadline(self, now: float) -> None:
        self.checked.append(now)


async def test_the_watchdog_checks_open_connections_and_stops_when_none_are_left() -> None:
    loop = asyncio.get_running_loop()
    watchdog = _Watchdog(0.04)  # ticks every 10 ms
    connection = _Connection(loop, loop.time())
    watchdog.watch(connection)  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert len(connection.checked) >= 2
    watchdog.forget(connection)  # type: ignore[arg-type]
    await asyncio.sleep(0.02)
    ticks = len(connection.checked)
    await asyncio.sleep(0.05)
    assert len(connection.checked) == ticks
    assert watchdog._timer is None


def test_the_watchdog_follows_a_server_into_a_new_event_loop() -> None:
    watchdog = _Watchdog(0.04)

    async def serve_one() -> list[float]:
        connection = _Connection(asyncio.get_running_loop(), 0.0)
        watchdog.watch(connection)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        watchdog.forget(connection)  # type: ignore[arg-type]
        return connection.checked

    for _ in range(2):  # the first loop ends with its timer pending; the second needs its own
        assert len(asyncio.run(serve_one())) >= 2
