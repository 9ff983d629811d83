"""Closed-loop and open-loop load against one :class:`~infership.bench.transport.Target`.

- **Closed loop** (``concurrency``): that many connections, each sending its next request as
  soon as the previous answer arrives. It finds the throughput a server sustains at a given
  concurrency; latency is counted from each send.
- **Open loop** (``rate``): requests are due at fixed intervals whether or not earlier ones have
  been answered. Latency is counted from the time a request was *due*, not from when a free
  connection finally sent it, so a stalled server cannot hide its stall by slowing the
  generator down (no coordinated omission). Connections are opened as needed, up to
  ``max_connections``; a request waiting for one is already accruing latency.

A run first warms up (answers not counted), then measures for ``duration_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from infership.bench.transport import Connection, Target

BROKEN = frozenset({"disconnected", "timeout", "protocol"})
"""Outcomes after which a connection is replaced rather than reused."""

clock = time.perf_counter
"""Latency clock. Not ``loop.time()``: uvloop's has millisecond resolution."""

_LATE_S = 0.001
"""An open-loop send later than this after its due time counts as late."""


@dataclass(frozen=True)
class Load:
    """What to send: a closed loop at ``concurrency`` or an open loop at ``rate`` req/s."""

    concurrency: int | None = None
    rate: float | None = None
    duration_s: float = 10.0
    warmup_s: float = 1.0
    max_connections: int = 512
    max_idle_s: float = 2.0
    """Open loop: a connection idle longer is closed rather than reused. Servers close idle
    kept-alive connections (uvicorn after 5 s); reusing one just as the server closes it
    loses the request to a reset, an error of the client's making (the keep-alive race)."""

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.rate is None):
            raise ValueError("give exactly one of concurrency (closed loop) or rate (open loop)")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration must be positive and warm-up not negative")

    @property
    def mode(self) -> str:
        return "closed" if self.concurrency is not None else "open"


@dataclass
class Recording:
    """Raw outcome of one run (or one slice of an alternating run): merge, then summarize."""

    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_latencies_s: list[float] = field(default_factory=list)
    """How long failed requests took to fail: under overload, how fast refusals come."""
    window_s: float = 0.0
    client_cpu_s: float = 0.0
    late_sends: int = 0

    def merge(self, other: Recording) -> None:
        self.latencies_s += other.latencies_s
        self.errors.update(other.errors)
        self.error_latencies_s += other.error_latencies_s
        self.window_s += other.window_s
        self.client_cpu_s += other.client_cpu_s
        self.late_sends += other.late_sends


Progress = Callable[[float, Recording], None]
"""Called about twice a second with the seconds measured so far and the recording so far."""


def due_times(rate: float, start: float, end: float) -> list[float]:
    """Open-loop send times: ``start``, then every ``1/rate`` s, strictly before ``end``.

    Computed as ``start + i/rate`` (never by adding intervals), so rounding cannot drift.

    >>> due_times(4, 10.0, 11.0)
    [10.0, 10.25, 10.5, 10.75]
    """
    count = max(0, int((end - start) * rate - 1e-9) + 1) if end > start else 0
    return [start + i / rate for i in range(count)]


class _Recorder:
    def __init__(self, measure_from: float, measure_until: float) -> None:
        self.recording = Recording()
        self.measure_from = measure_from
        self.measure_until = measure_until

    def record(self, began: float, ended: float, outcome: str | None) -> None:
        """Count an answer whose latency runs from ``began`` (sent, or due) to ``ended``."""
        if began < self.measure_from:
            return  # warm-up
        if outcome is None:
            self.recording.latencies_s.append(ended - began)
        else:
            self.recording.errors[outcome] += 1
            self.recording.error_latencies_s.append(ended - began)


async def run(target: Target, load: Load, progress: Progress | None = None) -> Recording:
    """Drive ``target`` with ``load``; raises ConnectionError if it cannot be reached at all."""
    probe = await _connect_first(target)
    start = clock()
    recorder = _Recorder(start + load.warmup_s, start + load.warmup_s + load.duration_s)
    cpu_before = _cpu_seconds()
    reporter = asyncio.create_task(_report(recorder, progress)) if progress else None
    try:
        if load.concurrency is not None:
            await _closed_loop(target, probe, load.concurrency, recorder)
        else:
            assert load.rate is not None
            await _open_loop(target, probe, load, recorder)
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
    recording = recorder.recording
    recording.window_s = load.duration_s
    # The generator's CPU over the whole run, warm-up included, scaled to the measured window.
    elapsed = clock() - start
    recording.client_cpu_s = (_cpu_seconds() - cpu_before) * load.duration_s / elapsed
    return recording


async def _connect_first(target: Target) -> Connection:
    try:
        return await target.connect()
    except OSError as exc:
        raise ConnectionError(f"cannot connect to {target.label}: {exc}") from exc


async def _closed_loop(
    target: Target, first: Connection, concurrency: int, recorder: _Recorder
) -> None:
    end = recorder.measure_until

    async def worker(connection: Connection | None) -> None:
        while clock() < end:
            if connection is None:
                connection = await _reconnect(target, recorder, clock())
                continue
            began = clock()
            outcome = await connection.send()
            ended = clock()
            if ended <= end:
                recorder.record(began, ended, outcome)
            if outcome in BROKEN or not connection.reusable:
                await connection.close()
                connection = None
        if connection is not None:
            await connection.close()

    first_connections: list[Connection | None] = [first]
    first_connections += [None] * (concurrency - 1)
    await asyncio.gather(*(worker(c) for c in first_connections))


async def _reconnect(target: Target, recorder: _Recorder, now: float) -> Connection | None:
    try:
        return await target.connect()
    except OSError:
        recorder.record(now, now, "connect")
        await asyncio.sleep(0.01)  # a refusing server must not turn the loop into a spin
        return None


class _Pool:
    """Idle connections for the open loop; opens new ones up to a cap, then makes callers wait."""

    def __init__(self, target: Target, first: Connection, cap: int, max_idle_s: float) -> None:
        self._target = target
        self._idle = [(first, time.monotonic())]  # with when each was released
        self._open = 1
        self._cap = cap
        self._max_idle_s = max_idle_s
        self._waiters: list[asyncio.Future[Connection | None]] = []

    async def acquire(self) -> Connection:
        while True:
            while self._idle:
                idle, since = self._idle.pop()
                if idle.reusable and time.monotonic() - since <= self._max_idle_s:
                    return idle
                self._open -= 1  # closed by the server while idle, or idle for too long
                await idle.close()
            if self._open < self._cap:
                self._open += 1
                try:
                    return await self._target.connect()
                except OSError:
                    self._open -= 1
                    raise
            waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            connection = await waiter
            if connection is not None:
                return connection
            # None: a connection broke and freed a slot; loop round and open one.

    async def release(self, connection: Connection, broken: bool) -> None:
        if broken:
            self._open -= 1
            await connection.close()
        handed: Connection | None = None if broken else connection
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(handed)
                return
        if handed is not None:
            self._idle.append((handed, time.monotonic()))

    async def close(self) -> None:
        for connection, _ in self._idle:
            await connection.close()
        self._idle.clear()


async def _open_loop(target: Target, first: Connection, load: Load, recorder: _Recorder) -> None:
    assert load.rate is not None
    pool = _Pool(target, first, load.max_connections, load.max_idle_s)
    start = recorder.measure_from - load.warmup_s

    async def one(due: float) -> None:
        try:
            connection = await pool.acquire()
        except OSError:
            recorder.record(due, clock(), "connect")
            return
        sent = clock()
        if sent - due > _LATE_S and due >= recorder.measure_from:
            recorder.recording.late_sends += 1
        outcome = await connection.send()
        recorder.record(due, clock(), outcome)
        await pool.release(connection, outcome in BROKEN or not connection.reusable)

    tasks: set[asyncio.Task[None]] = set()
    for due in due_times(load.rate, start, recorder.measure_until):
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # Every due request is waited for: in an open loop the slow answers are the point.
    while tasks:
        await asyncio.gather(*list(tasks))
    await pool.close()


async def _report(recorder: _Recorder, progress: Progress) -> None:
    while True:
        await asyncio.sleep(0.5)
        progress(max(0.0, clock() - recorder.measure_from), recorder.recording)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a local process has used so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
