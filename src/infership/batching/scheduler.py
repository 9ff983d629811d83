"""BatchScheduler: one model's bounded request queue, drained into batches in worker threads.

Every inference goes through a scheduler. Callers ``await submit(inputs)``; the scheduler
groups queued requests into batches, runs the model's execute function in a worker thread (the
event loop never computes, not even the stacking copies) and gives each caller its own rows.

The policy (BatchPolicy), in the order it is applied:

- Greedy by default. When an execution slot is free, whatever is queued leaves at once, so a
  lone request pays no waiting. Batches form by themselves under load, from the requests that
  arrive while all ``parallel_executions`` slots are busy: waiting only where it pays.
- A batch takes queued requests oldest first, only those with the oldest one's batch_key, whole
  requests only, up to ``max_batch_size`` rows. A request that does not fit is left for the next
  batch (never split); the oldest request is always taken, so nothing starves.
- Waiting is opt-in: with ``max_queue_delay_ms`` > 0, a batch below the smallest preferred size
  (``max_batch_size`` when none are set) waits for more requests, up to the delay counted from
  its oldest request. It leaves as soon as it reaches that size, when more compatible rows are
  queued than fit, or when the scheduler is stopping.
- The queue holds at most ``max_queue_size`` requests (counting those still being prepared);
  with ``latency_budget_ms``, a request that would be answered later than that (estimated from
  recent batch times, plus the recent preparation time when it still has to be prepared) is
  refused too. Beyond either, QueueFull at once. A request admitted by ``reserve()`` before its
  preparation is not checked again when submitted: refusing it then would waste the decoding
  already done and answer its client late.
  The estimate is an average; the budget is a p99. So each request admitted by ``reserve()``
  compares, once answered, how long it really took with what was estimated when it came in,
  and the scheduler tracks the 99th percentile of that error (a streaming quantile) and adds
  it to every estimate: the admitted requests' p99, not their mean, lands on the budget.
  A queued request whose deadline passes fails with DeadlineExceeded when it passes (a timer,
  not the next free slot) and is never computed; one whose caller went away is dropped.

Where a batch computes: in a worker thread (``executor``), so the event loop keeps serving;
except that a model whose batches take less than ``inline_below_s`` (typically under 0.2 ms:
tiny models) computes on the event loop thread itself. Handing such a batch to a thread and back
costs more than computing it: two thread wake-ups and the GIL passed back and forth, about
150 µs of CPU per request on the trivial benchmark model (docs/benchmarking.md, "Where the time
goes"). The typical compute time is learnt from the batches computed so far (warm-up included),
so a model starts in the worker thread and moves to the loop only once it has proved fast.

All state belongs to the event loop thread and changes only in ``_pump``, which never awaits,
so no two steps interleave. It runs after every submit, cancellation, finished batch and timer:
it expires what is late, dispatches what is ready and arms one timer for the next moment
something can change (a queue delay ending or a deadline passing).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from infership.batching.assemble import BatchKey, batch_key, count_rows, split, stack
from infership.batching.policy import BatchPolicy
from infership.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidRequest,
    ModelCodeFailed,
    ModelNotReady,
    PayloadTooLarge,
    QueueFull,
)
from infership.types import Array

ExecuteFn = Callable[[dict[str, Array]], dict[str, Array]]
"""Computes one batch in a worker thread; every output's leading axis must have the batch's rows."""

INLINE_BELOW_S = 0.0002
"""Default ``inline_below_s``: about what a round trip through a worker thread costs here."""


class SchedulerObserver(Protocol):
    """Metrics hook (the server implements it with prometheus). Called on the event loop."""

    def queue_wait(self, seconds: float) -> None:
        """Per dispatched request: clock time from submit to dispatch."""

    def batch_done(self, rows: int, requests: int, seconds: float) -> None:
        """Per successfully computed batch: its size and compute time (wall seconds)."""

    def queue_depth(self, requests: int) -> None:
        """Requests waiting, reported whenever it changed after a scheduling step."""


class _State(Enum):
    NEW = "not started"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(eq=False, slots=True)  # eq=False: identity, never compare numpy arrays
class _Request:
    inputs: dict[str, Array]
    rows: int
    key: BatchKey
    submitted: float
    deadline: float | None
    future: asyncio.Future[dict[str, Array]]
    queued: bool = True


@dataclass(frozen=True)
class Admission:
    """A request admitted by ``reserve()``: when, and the answer time estimated then."""

    started: float
    """``time.perf_counter()`` at admission."""
    estimate_s: float | None
    """Seconds to the answer, as estimated at admission; None without a latency budget."""


_ERROR_STEP_S = 0.001


class _Preparation(contextlib.AbstractContextManager[Admission]):
    """What ``reserve()`` returns (a class, not a generator: it runs for every request)."""

    __slots__ = ("_admission", "_scheduler")

    def __init__(self, scheduler: BatchScheduler, admission: Admission) -> None:
        self._scheduler = scheduler
        self._admission = admission

    def __enter__(self) -> Admission:
        return self._admission

    def __exit__(self, kind: object, *_: object) -> None:
        self._scheduler._prepared(self._admission, succeeded=kind is None)


class BatchScheduler:
    """Dynamic batching for one model; see the module docstring for the policy.

    ``clock`` (seconds, ``time.monotonic`` by default) measures queue delays, deadlines and
    queue waits; compute time is always wall time. ``inline_below_s`` (0 turns it off) is the
    typical batch time under which batches compute on the event loop thread. Example::

        scheduler = BatchScheduler("resnet", session_run, BatchPolicy(), thread_pool)
        await scheduler.start()
        outputs = await scheduler.submit({"x": batch_of_two}, deadline=time.monotonic() + 1)
    """

    def __init__(
        self,
        name: str,
        execute: ExecuteFn,
        policy: BatchPolicy,
        executor: Executor,
        *,
        observer: SchedulerObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        inline_below_s: float = INLINE_BELOW_S,
    ) -> None:
        self.name = name
        self.policy = policy
        self._execute = execute
        self._executor = executor
        self._observer = observer
        self._clock = clock
        self._delay_s = policy.max_queue_delay_ms / 1000
        self._worth_waiting_for = (policy.preferred_batch_sizes or (policy.max_batch_size,))[0]
        self._state = _State.NEW
        self._queue: list[_Request] = []
        self._preparing = 0  # admitted by reserve(), not yet submitted (e.g. images decoding)
        self._free_slots = policy.parallel_executions
        self._in_flight = 0
        self._batches: set[asyncio.Task[None]] = set()  # strong references to running batches
        self._timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()  # set once stopping and nothing is queued or computing
        self._reported_depth = 0
        self._batch_seconds: float | None = None  # moving average, for the QueueFull hint
        self._prepare_seconds: float | None = None  # moving average of reserve() blocks
        self._estimate_error_s = 0.0  # 99th percentile of (answer time - estimate), see _learn
        self._inline_below_s = inline_below_s
        self._typical_seconds: float | None = None  # outlier-resistant average, see _record

    @property
    def queue_depth(self) -> int:
        """Requests waiting for an execution slot."""
        return len(self._queue)

    @property
    def estimate_error_s(self) -> float:
        """The learnt 99th percentile of (answer time - estimate) added to latency estimates."""
        return self._estimate_error_s

    @property
    def in_flight(self) -> int:
        """Requests (not rows) in batches being computed, including ones whose caller left."""
        return self._in_flight

    async def start(self) -> None:
        """Start accepting requests (inside the running loop); once stopped: ModelNotReady."""
        if self._state is _State.NEW:
            self._state = _State.RUNNING
        elif self._state is not _State.RUNNING:
            raise ModelNotReady(f"model {self.name!r}: a stopped scheduler cannot be restarted")

    async def submit(
        self,
        inputs: dict[str, Array],
        deadline: float | None = None,
        *,
        admission: Admission | None = None,
    ) -> dict[str, Array]:
        """Queue one request and return its outputs, rows in the same order as its inputs.

        ``deadline`` is absolute, in ``clock()`` seconds; None uses the policy's
        ``default_timeout_ms``. ``admission``: what ``reserve()`` yielded just before; the
        capacity check is then not repeated. Raises InvalidRequest (malformed or too many
        rows), QueueFull, DeadlineExceeded, ModelNotReady (not started or stopping) or
        InferenceFailed.
        """
        if self._state is not _State.RUNNING:
            raise ModelNotReady(
                f"model {self.name!r} is not accepting requests (scheduler is {self._state.value})"
            )
        try:
            rows = count_rows(inputs)
        except InvalidRequest as exc:
            raise InvalidRequest(f"model {self.name!r}: {exc.message}") from None
        limit = self.policy.max_batch_size
        if rows > limit:
            raise PayloadTooLarge(
                f"model {self.name!r} takes at most {limit} rows per request "
                f"(max_batch_size); this request has {rows}"
            )
        now = self._clock()
        if deadline is None and self.policy.default_timeout_ms is not None:
            deadline = now + self.policy.default_timeout_ms / 1000
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded(
                f"model {self.name!r}: the request's deadline had passed "
                f"when it arrived; it was not computed"
            )
        if admission is None:
            self.check_capacity()
        if self._computes_now(rows):
            outputs = self._compute_now(inputs, rows)
        else:
            outputs = await self._queued(inputs, rows, now, deadline)
        if admission is not None and admission.estimate_s is not None:
            self._learn(time.perf_counter() - admission.started - admission.estimate_s)
        return outputs

    def _computes_now(self, rows: int) -> bool:
        """Whether ``_pump`` would compute a request arriving now at once, on the loop: nothing
        queued, a slot free, a model fast enough to compute inline, no company worth waiting
        for. Then it is computed without going through the queue (no future, no pump)."""
        return (
            not self._queue
            and self._free_slots > 0
            and self._computes_inline()
            and (rows >= self._worth_waiting_for or self._delay_s <= 0)
        )

    def _compute_now(self, inputs: dict[str, Array], rows: int) -> dict[str, Array]:
        """``_run_inline`` for one request that never queued: same metrics, same errors."""
        if self._observer is not None:
            self._observer.queue_wait(0.0)
        self._in_flight += 1
        started = time.perf_counter()
        try:
            outputs = self._execute(dict(inputs))  # one request: nothing to stack
        except Exception as exc:
            message, kind = self._failure(exc, rows, 1)
            raise kind(message) from exc
        finally:
            self._in_flight -= 1
        seconds = time.perf_counter() - started
        try:
            (part,) = split(outputs, [rows])
        except Exception as exc:
            raise InferenceFailed(self._mismatch_message(rows, exc)) from exc
        self._record(rows, 1, seconds)
        return part

    async def _queued(
        self, inputs: dict[str, Array], rows: int, now: float, deadline: float | None
    ) -> dict[str, Array]:
        future: asyncio.Future[dict[str, Array]] = asyncio.get_running_loop().create_future()
        request = _Request(inputs, rows, batch_key(inputs), now, deadline, future)
        self._queue.append(request)
        self._pump()
        try:
            return await future
        except asyncio.CancelledError:
            # The caller went away. Still queued: forget it so it is never computed. Already
            # dispatched: the batch finds its future cancelled and drops its rows.
            if request.queued:
                request.queued = False
                self._queue.remove(request)
                self._pump()
            raise

    def reserve(self) -> contextlib.AbstractContextManager[Admission]:
        """Admit a request before its costly preparation (image decoding), or raise QueueFull at
        once. While prepared it counts as queued, so a burst cannot pile up unbounded work in
        front of the queue; submit it right after the block, with the Admission yielded."""
        estimate = self.check_capacity(unprepared=True)
        self._preparing += 1
        return _Preparation(self, Admission(time.perf_counter(), estimate))

    def _prepared(self, admission: Admission, *, succeeded: bool) -> None:
        self._preparing -= 1
        if not succeeded:
            return  # only successful preparations teach the estimate: a bad image fails fast
        seconds = time.perf_counter() - admission.started
        previous = self._prepare_seconds
        self._prepare_seconds = seconds if previous is None else 0.8 * previous + 0.2 * seconds

    def check_capacity(self, *, unprepared: bool = False) -> float | None:
        """Raise QueueFull now if a submit would be refused: the queue (with the requests being
        prepared) is at ``max_queue_size``, or a new request would be answered later than
        ``latency_budget_ms`` (counting its preparation when it is ``unprepared``).

        Returns the estimated answer time in seconds (before the learnt error is added), or
        None without a latency budget or before a batch was timed."""
        waiting = len(self._queue) + self._preparing
        if waiting >= self.policy.max_queue_size:
            raise QueueFull(
                f"model {self.name!r} has {waiting} requests queued (max_queue_size); retry later",
                retry_after_s=self._retry_after(),
            )
        budget_ms = self.policy.latency_budget_ms
        if budget_ms is None:
            return None
        estimate = self._latency_s()
        if estimate is None:
            return None
        if unprepared and self._prepare_seconds is not None:
            estimate += self._prepare_seconds
        latency = estimate + self._estimate_error_s
        # With nothing queued and a free slot the request runs at once: no one to wait for.
        if (waiting or self._free_slots == 0) and latency * 1000 > budget_ms:
            raise QueueFull(
                f"model {self.name!r} would answer in about {latency * 1000:.0f} ms, over its "
                f"latency budget (latency_budget_ms {budget_ms:g}); retry later",
                retry_after_s=self._retry_after(),
            )
        return estimate

    async def stop(self, *, drain: bool = True) -> None:
        """Stop accepting requests, then return once nothing is queued or computing.

        drain=True computes everything already accepted (without waiting for company).
        drain=False fails queued requests with ModelNotReady; batches already computing still
        finish and deliver, because a worker thread cannot be interrupted.
        """
        if self._state is _State.NEW:
            self._state = _State.STOPPED
            self._idle.set()
        if self._state is not _State.STOPPED:  # running, or a drain that may become an abort
            self._state = _State.STOPPING
            if not drain:
                for request in self._queue:
                    request.queued = False
                    if request.future.done():  # its caller was cancelled meanwhile
                        continue
                    request.future.set_exception(
                        ModelNotReady(f"model {self.name!r} stopped before computing this request")
                    )
                self._queue = []
            self._pump()
        await self._idle.wait()
        self._state = _State.STOPPED

    def _pump(self) -> None:
        """One scheduling step: expire, dispatch while a slot is free, re-arm the timer."""
        now = self._clock()
        self._expire(now)
        while self._free_slots > 0 and self._queue:
            batch = self._take_batch(now)
            if batch is None:  # waiting for company; the timer ends the wait
                break
            if self._computes_inline():
                self._run_inline(batch, now)
                now = self._clock()
                self._expire(now)
            else:
                self._launch(batch, now)
        self._arm_timer(now)
        if self._observer is not None and len(self._queue) != self._reported_depth:
            self._reported_depth = len(self._queue)
            self._observer.queue_depth(self._reported_depth)
        if self._state is _State.STOPPING and not self._queue and not self._in_flight:
            self._idle.set()

    def _expire(self, now: float) -> None:
        keep = []
        for request in self._queue:
            if request.future.done():  # cancelled; its submit has not run its except yet
                request.queued = False
            elif request.deadline is not None and request.deadline <= now:
                request.queued = False
                request.future.set_exception(
                    DeadlineExceeded(
                        f"model {self.name!r}: the request's deadline passed while it was queued; "
                        f"it was not computed"
                    )
                )
            else:
                keep.append(request)
        self._queue = keep

    def _take_batch(self, now: float) -> list[_Request] | None:
        """The next batch (removed from the queue), or None while it should wait for more."""
        head = self._queue[0]
        batch: list[_Request] = []
        rows, overflow = 0, False
        for request in self._queue:
            if request.key != head.key:
                continue
            if rows + request.rows <= self.policy.max_batch_size:
                batch.append(request)
                rows += request.rows
            else:
                overflow = True  # more is queued than fits: waiting cannot help
        if (
            rows < self._worth_waiting_for
            and not overflow
            and self._state is _State.RUNNING
            and now < head.submitted + self._delay_s
        ):
            return None
        for request in batch:
            request.queued = False
        self._queue = [request for request in self._queue if request.queued]
        return batch

    def _computes_inline(self) -> bool:
        typical = self._typical_seconds
        return typical is not None and typical < self._inline_below_s

    def _run_inline(self, batch: list[_Request], now: float) -> None:
        if self._observer is not None:
            for request in batch:
                self._observer.queue_wait(now - request.submitted)
        self._in_flight += len(batch)
        try:
            self._compute_inline(batch)
        finally:
            self._in_flight -= len(batch)

    def _compute_inline(self, batch: list[_Request]) -> None:
        try:
            outputs, seconds = self._compute([request.inputs for request in batch])
        except InvalidRequest as exc:
            if len(batch) == 1:
                self._fail(batch, exc, exc.message, type(exc))
            else:  # the model refused its input: find which request it was, as _run does
                for request in batch:
                    self._compute_inline([request])
            return
        except Exception as exc:
            self._fail(batch, exc, *self._batch_failure(batch, exc))
            return
        self._deliver(batch, outputs, seconds)

    def _launch(self, batch: list[_Request], now: float) -> None:
        self._free_slots -= 1
        self._in_flight += len(batch)
        if self._observer is not None:
            for request in batch:
                self._observer.queue_wait(now - request.submitted)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    def _arm_timer(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        wake = [request.deadline for request in self._queue if request.deadline is not None]
        if self._queue and self._free_slots > 0:  # the oldest request is waiting for company
            wake.append(self._queue[0].submitted + self._delay_s)
        if wake:
            self._timer = asyncio.get_running_loop().call_later(
                max(0.0, min(wake) - now), self._pump
            )

    async def _run(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                outputs, seconds = await loop.run_in_executor(
                    self._executor, self._compute, [request.inputs for request in batch]
                )
            except InvalidRequest as exc:
                if len(batch) == 1:
                    self._fail(batch, exc, exc.message, type(exc))
                else:  # the model refused its input: find which request it was
                    await self._one_by_one(batch)
                return
            except Exception as exc:
                self._fail(batch, exc, *self._batch_failure(batch, exc))
                return
            self._deliver(batch, outputs, seconds)
        finally:
            # Whatever happened (this task cancelled at loop shutdown), no caller hangs.
            self._fail(
                batch,
                None,
                f"model {self.name!r} stopped while computing this request",
                ModelNotReady,
            )
            self._free_slots += 1
            self._in_flight -= len(batch)
            self._pump()

    async def _one_by_one(self, batch: list[_Request]) -> None:
        """Compute each request of a batch alone. A model's own code may refuse an input
        (InvalidRequest, 400): the request at fault gets that answer, the others theirs."""
        loop = asyncio.get_running_loop()
        for request in batch:
            if request.future.done():
                continue
            try:
                outputs, seconds = await loop.run_in_executor(
                    self._executor, self._compute, [request.inputs]
                )
            except Exception as exc:
                self._fail([request], exc, *self._failure(exc, request.rows, 1))
                continue
            self._deliver([request], outputs, seconds)

    def _batch_failure(self, batch: list[_Request], exc: Exception) -> tuple[str, type[Exception]]:
        return self._failure(exc, sum(request.rows for request in batch), len(batch))

    def _failure(self, exc: Exception, rows: int, requests: int) -> tuple[str, type[Exception]]:
        """The error each caller of a failed batch gets. The model's own refusals (a client's
        InvalidRequest) and its code's failures (ModelCodeFailed) keep their class and their
        message, which already names the model; anything else is an InferenceFailed."""
        if isinstance(exc, InvalidRequest | ModelCodeFailed):
            return exc.message, type(exc)
        return (
            f"model {self.name!r} failed computing a batch of {rows} "
            f"rows ({requests} requests): {type(exc).__name__}: {exc}"
        ), InferenceFailed

    def _mismatch_message(self, rows: int, exc: Exception) -> str:
        return (
            f"model {self.name!r} returned outputs that do not match its batch of {rows} rows: "
            f"{exc}"
        )

    def _deliver(self, batch: list[_Request], outputs: dict[str, Array], seconds: float) -> None:
        rows = sum(request.rows for request in batch)
        try:
            parts = split(outputs, [request.rows for request in batch])
        except Exception as exc:  # ValueError, or not even a mapping of arrays
            self._fail(batch, exc, self._mismatch_message(rows, exc))
            return
        self._record(rows, len(batch), seconds)
        for request, part in zip(batch, parts, strict=True):
            if not request.future.done():  # its caller may have gone away meanwhile
                request.future.set_result(part)

    def _compute(self, inputs: list[dict[str, Array]]) -> tuple[dict[str, Array], float]:
        # Usually a worker thread: stacking copies every input once, so it stays off the loop.
        batch, _ = stack(inputs)
        start = time.perf_counter()
        outputs = self._execute(batch)
        return outputs, time.perf_counter() - start

    def _fail(
        self,
        batch: list[_Request],
        cause: Exception | None,
        message: str,
        kind: type[Exception] = InferenceFailed,
    ) -> None:
        for request in batch:
            if not request.future.done():
                error = kind(message)
                error.__cause__ = cause  # as `raise error from cause`; one error per caller
                request.future.set_exception(error)

    def _record(self, rows: int, requests: int, seconds: float) -> None:
        previous = self._batch_seconds
        self._batch_seconds = seconds if previous is None else 0.8 * previous + 0.2 * seconds
        # Whether to compute inline must not flip on one outlier: a preempted batch, or one that
        # waited for the GIL in its worker thread. A sample counts at most 4 × the average, so
        # a lasting change still shows within a few batches.
        typical = self._typical_seconds
        self._typical_seconds = (
            seconds if typical is None else 0.8 * typical + 0.2 * min(seconds, 4 * typical)
        )
        if self._observer is not None:
            self._observer.batch_done(rows, requests, seconds)

    def _learn(self, error_s: float) -> None:
        """Track the 99th percentile of (answer time - estimate) without keeping samples: step
        up 99 parts when an error lands above it, down 1 part when below, so that it settles
        where 1 % of errors are above it (a Robbins-Monro quantile estimate). Steps of 1 ms
        follow a change within a few hundred requests; the bound keeps one pathological stall
        from closing the model for long."""
        step = _ERROR_STEP_S * (0.99 if error_s > self._estimate_error_s else -0.01)
        bound = (self.policy.latency_budget_ms or 0.0) / 1000
        self._estimate_error_s = min(bound, max(-bound / 2, self._estimate_error_s + step))

    def _queue_wait_s(self) -> float | None:
        """How long the queued work takes to reach compute: recent compute time per batch ×
        batches queued ÷ slots. Ignores batches already computing and requests about to
        expire; None until a batch has been timed."""
        if self._batch_seconds is None:
            return None
        # A request still being prepared counts as one row: its size is not known yet.
        queued_rows = sum(request.rows for request in self._queue) + self._preparing
        batches = -(-queued_rows // self.policy.max_batch_size)  # ceiling division
        return self._batch_seconds * batches / self.policy.parallel_executions

    def _latency_s(self) -> float | None:
        """When a request arriving now would be answered: the queued work, the batches being
        computed, and its own batch (from recent batch times); None until a batch was timed."""
        if self._batch_seconds is None:
            return None
        rows = sum(request.rows for request in self._queue) + self._preparing + 1
        busy = self.policy.parallel_executions - self._free_slots
        batches = -(-rows // self.policy.max_batch_size) + busy  # ceiling division
        return self._batch_seconds * batches / self.policy.parallel_executions

    def _retry_after(self) -> float:
        """The hint for QueueFull: the queue's wait, clamped to [0.1 s, 30 s]; 1 s until a
        batch has been timed."""
        wait = self._queue_wait_s()
        return 1.0 if wait is None else min(30.0, max(0.1, wait))
