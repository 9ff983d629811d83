from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from infership.bench import loadgen
from infership.bench.loadgen import Load, due_times
from infership.bench.payloads import raw_image
from infership.bench.transport import HttpTarget, split_url

Behaviour = Callable[[int], Awaitable[int | None]]
"""Given the request's sequence number, returns the status to answer (None: hang up)."""


@dataclass
class TinyServer:
    url: str
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0


async def _serve(behaviour: Behaviour, server: TinyServer, reader, writer) -> None:  # type: ignore[no-untyped-def]
    server.connections += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            server.bodies.append(await reader.readexactly(length))
            status = await behaviour(len(server.bodies))
            if status is None:
                break
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok".encode())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
def tiny_server() -> Callable[[Behaviour], AsyncIterator[TinyServer]]:
    """``async with contextlib.asynccontextmanager(tiny_server)(behaviour) as server``."""

    async def start(behaviour: Behaviour) -> AsyncIterator[TinyServer]:
        box = TinyServer(url="")
        listener = await asyncio.start_server(
            lambda r, w: _serve(behaviour, box, r, w), "127.0.0.1", 0
        )
        box.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        async with listener:
            yield box

    return start


REQUEST = raw_image(b"x" * 100, "a.jpg")


async def answer_ok(_: int) -> int:
    return 200


def test_due_times_are_evenly_spaced_from_the_start_without_drift() -> None:
    times = due_times(1000, 5.0, 15.0)
    assert len(times) == 10_000
    assert times[0] == 5.0
    assert times[-1] == pytest.approx(5.0 + 9999 / 1000, abs=1e-12)
    assert due_times(10, 1.0, 1.0) == []


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"concurrency": 1, "rate": 5.0}, {"concurrency": 0}, {"rate": -1.0},
     {"concurrency": 1, "duration_s": 0}],
)  # fmt: skip
def test_a_load_is_one_closed_or_one_open_loop_with_sane_numbers(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=r"exactly one|at least 1|positive"):
        Load(**kwargs)


@pytest.mark.parametrize(
    ("url", "expected"),
    [("http://127.0.0.1:8000", ("127.0.0.1", 8000)), ("localhost:9", ("localhost", 9)),
     ("grpc://h", ("h", 8001))],
)  # fmt: skip
def test_target_urls(url: str, expected: tuple[str, int]) -> None:
    assert split_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://h:1", "http://h:1/predict"])
def test_target_urls_with_a_path_or_odd_scheme_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="target"):
        split_url(url)


async def test_closed_loop_counts_answers_and_errors_by_kind(tiny_server) -> None:  # type: ignore[no-untyped-def]
    async def every_third_is_busy(n: int) -> int:
        return 503 if n % 3 == 0 else 200

    async with contextlib.asynccontextmanager(tiny_server)(every_third_is_busy) as server:
        target = HttpTarget(server.url, REQUEST)
        recording = await loadgen.run(target, Load(concurrency=2, duration_s=0.3, warmup_s=0))
    ok, busy = len(recording.latencies_s), recording.errors["http 503"]
    assert ok > 0
    assert busy > 0
    assert set(recording.errors) == {"http 503"}
    assert abs(ok - 2 * busy) <= 4  # one in three answered 503, up to in-flight edges
    assert server.bodies[0] == b"x" * 100


async def test_hang_ups_are_counted_and_the_connection_replaced(tiny_server) -> None:  # type: ignore[no-untyped-def]
    async def hang_up_every_other(n: int) -> int | None:
        return None if n % 2 == 0 else 200

    async with contextlib.asynccontextmanager(tiny_server)(hang_up_every_other) as server:
        target = HttpTarget(server.url, REQUEST)
        recording = await loadgen.run(target, Load(concurrency=1, duration_s=0.3, warmup_s=0))
    assert recording.errors["disconnected"] > 0
    assert len(recording.latencies_s) > 1  # kept going on fresh connections


async def test_timeouts_are_an_error_kind(tiny_server) -> None:  # type: ignore[no-untyped-def]
    async def never(n: int) -> int:
        await asyncio.sleep(10)
        return 200

    async with contextlib.asynccontextmanager(tiny_server)(never) as server:
        target = HttpTarget(server.url, REQUEST, timeout_s=0.05)
        recording = await loadgen.run(target, Load(concurrency=1, duration_s=0.2, warmup_s=0))
    assert recording.errors["timeout"] >= 1
    assert recording.latencies_s == []


async def test_open_loop_charges_a_stall_to_every_request_due_during_it(tiny_server) -> None:  # type: ignore[no-untyped-def]
    # The server stalls once for 300 ms. A closed loop would see one slow request; an open
    # loop at 100/s must see the ~30 requests due in the stall wait, each from its due time.
    stalled = asyncio.Event()

    async def stall_once(n: int) -> int:
        if n == 5 and not stalled.is_set():
            stalled.set()
            await asyncio.sleep(0.3)
        return 200

    async with contextlib.asynccontextmanager(tiny_server)(stall_once) as server:
        target = HttpTarget(server.url, REQUEST)
        load = Load(rate=100, duration_s=0.6, warmup_s=0, max_connections=1)
        recording = await loadgen.run(target, load)
    assert len(recording.latencies_s) == 60  # every due request answered and counted
    slow = [t for t in recording.latencies_s if t >= 0.1]
    assert len(slow) >= 15
    assert max(recording.latencies_s) >= 0.29
    assert recording.late_sends >= 15


@pytest.mark.parametrize(("max_idle_s", "most"), [(0.03, None), (10.0, 2)])
async def test_open_loop_retires_connections_idle_too_long(tiny_server, max_idle_s, most) -> None:  # type: ignore[no-untyped-def]
    # 20 requests 100 ms apart: each connection sits idle 100 ms between them. Past
    # max_idle_s it is closed and a fresh one opened (no reuse as the server may close it).
    async with contextlib.asynccontextmanager(tiny_server)(answer_ok) as server:
        target = HttpTarget(server.url, REQUEST)
        load = Load(rate=10, duration_s=2, warmup_s=0, max_idle_s=max_idle_s)
        recording = await loadgen.run(target, load)
    assert len(recording.latencies_s) == 20
    if most is None:
        assert server.connections >= 20  # every request on a new connection
    else:
        assert server.connections <= most  # kept alive and reused


async def test_warm_up_answers_are_not_counted(tiny_server) -> None:  # type: ignore[no-untyped-def]
    async with contextlib.asynccontextmanager(tiny_server)(answer_ok) as server:
        target = HttpTarget(server.url, REQUEST)
        recording = await loadgen.run(target, Load(rate=50, duration_s=0.2, warmup_s=0.2))
    assert len(server.bodies) == 20
    assert len(recording.latencies_s) == 10


async def test_an_unreachable_target_fails_at_once_with_its_address() -> None:
    from conftest import free_port  # tests/conftest.py

    target = HttpTarget(f"http://127.0.0.1:{free_port()}", REQUEST)
    with pytest.raises(ConnectionError, match=r"cannot connect to http://127\.0\.0\.1"):
        await loadgen.run(target, Load(concurrency=1, duration_s=0.1))


async def test_progress_is_reported_while_running(tiny_server) -> None:  # type: ignore[no-untyped-def]
    seen: list[float] = []
    async with contextlib.asynccontextmanager(tiny_server)(answer_ok) as server:
        target = HttpTarget(server.url, REQUEST)
        load = Load(concurrency=1, duration_s=1.2, warmup_s=0)
        await loadgen.run(target, load, lambda seconds, _: seen.append(seconds))
    assert len(seen) >= 2
