"""BatchScheduler through its public behaviour: submit requests, watch what the fake model saw.

Batch composition is made deterministic by holding the first batch "in compute" (a
threading.Event in the fake model) while the next requests queue up behind it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import pytest

from infership.batching import BatchPolicy, BatchScheduler, SchedulerObserver
from infership.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidRequest,
    ModelNotReady,
    QueueFull,
)
from infership.types import Array

Inputs = dict[str, Array]


class FakeModel:
    """Runs ``fn`` on each batch, recording it; holds every batch until ``release`` is set."""

    def __init__(self, fn: Callable[[Inputs], Inputs], *, hold: bool = False) -> None:
        self.fn = fn
        self.batches: list[Inputs] = []
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def __call__(self, inputs: Inputs) -> Inputs:
        with self._lock:
            self.batches.append(inputs)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            assert self.release.wait(5), "test never released the model"
            return self.fn(inputs)
        finally:
            with self._lock:
                self.running -= 1

    @property
    def sizes(self) -> list[int]:
        """Rows of each batch, in the order they entered compute."""
        return [len(next(iter(batch.values()))) for batch in self.batches]

    def saw(self, value: float) -> bool:
        """Whether any computed batch contained a row of ``row(value)``."""
        return any(bool((batch["x"] == value).any()) for batch in self.batches)


def double(inputs: Inputs) -> Inputs:
    """Row-wise, so batched and unbatched results must be equal."""
    return {"y": inputs["x"] * 2}


def fail_on_minus_one(inputs: Inputs) -> Inputs:
    if (inputs["x"] == -1).any():
        raise RuntimeError("boom")
    return double(inputs)


def row(value: float, rows: int = 1, width: int = 2, dtype: Any = np.float32) -> Inputs:
    """A request of ``rows`` rows filled with ``value``, to recognise it in the fake's record."""
    return {"x": np.full((rows, width), value, dtype=dtype)}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []
        self.batches: list[tuple[int, int]] = []
        self.depths: list[int] = []
        self.compute_seconds: list[float] = []

    def queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    def batch_done(self, rows: int, requests: int, seconds: float) -> None:
        self.batches.append((rows, requests))
        self.compute_seconds.append(seconds)

    def queue_depth(self, requests: int) -> None:
        self.depths.append(requests)


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def spawn(scheduler: BatchScheduler, *requests: Inputs) -> list[asyncio.Task[Inputs]]:
    return [asyncio.create_task(scheduler.submit(request)) for request in requests]


class Make(Protocol):
    def __call__(
        self,
        model: Callable[[Inputs], Inputs],
        *,
        clock: Callable[[], float] = ...,
        observer: SchedulerObserver | None = ...,
        inline_below_s: float = ...,
        **policy: Any,
    ) -> Awaitable[BatchScheduler]: ...


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


@pytest.fixture
async def make(executor: ThreadPoolExecutor) -> AsyncIterator[Make]:
    made: list[BatchScheduler] = []

    async def make(
        model: Callable[[Inputs], Inputs],
        *,
        clock: Callable[[], float] = time.monotonic,
        observer: SchedulerObserver | None = None,
        inline_below_s: float = 0.0,  # held fakes block: they must compute in worker threads
        **policy: Any,
    ) -> BatchScheduler:
        scheduler = BatchScheduler(
            "toy",
            model,
            BatchPolicy(**policy),
            executor,
            observer=observer,
            clock=clock,
            inline_below_s=inline_below_s,
        )
        await scheduler.start()
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        await scheduler.stop(drain=False)


# --- batching ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [{}, {"preferred_batch_sizes": (4, 8)}, {"max_batch_size": 1}],
    ids=["defaults", "preferred-sizes-without-delay", "no-batching"],
)
async def test_lone_request_is_dispatched_within_submit(make: Make, policy: Any) -> None:
    clock, recorder = FakeClock(), Recorder()
    model = FakeModel(double, hold=True)
    scheduler = await make(model, clock=clock, observer=recorder, **policy)
    [task] = spawn(scheduler, row(1))
    await asyncio.sleep(0)  # one loop step: submit runs until it awaits its result
    # Already handed to a slot: no timer, no extra loop round, no clock time passed.
    assert (scheduler.in_flight, scheduler.queue_depth) == (1, 0)
    model.release.set()
    assert (await task)["y"].tolist() == [[2, 2]]
    assert recorder.waits == [0.0]
    assert model.sizes == [1]


async def test_requests_queued_behind_a_busy_slot_share_batches_of_at_most_max(
    make: Make,
) -> None:
    model = FakeModel(double, hold=True)
    scheduler = await make(model, max_batch_size=8)
    tasks = spawn(scheduler, *(row(i) for i in range(20)))
    await eventually(lambda: scheduler.queue_depth == 19)
    model.release.set()
    results = await asyncio.gather(*tasks)
    assert model.sizes == [1, 8, 8, 3]  # the first went alone, the rest waited for the slot
    for i, result in enumerate(results):
        assert result["y"].tolist() == [[2 * i, 2 * i]]
    assert model.max_running == 1


@pytest.mark.parametrize("parallel", [1, 2])
async def test_many_concurrent_requests_get_their_own_rows(make: Make, parallel: int) -> None:
    model = FakeModel(double)
    scheduler = await make(model, max_batch_size=8, parallel_executions=parallel)
    rand = random.Random(7)
    requests = [row(i, rows=rand.randint(1, 3)) for i in range(20)]
    results = await asyncio.gather(*spawn(scheduler, *requests))
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], double(request)["y"])  # as if unbatched
    assert all(size <= 8 for size in model.sizes)
    assert sum(model.sizes) == sum(len(request["x"]) for request in requests)
    assert model.max_running <= parallel


async def test_requests_are_packed_whole_and_never_split(make: Make) -> None:
    model = FakeModel(double, hold=True)
    scheduler = await make(model, max_batch_size=8)
    tasks = spawn(scheduler, row(0))
    await eventually(lambda: scheduler.in_flight == 1)
    tasks += spawn(scheduler, row(5, rows=5), row(4, rows=4), row(3, rows=3))
    await eventually(lambda: scheduler.queue_depth == 3)
    model.release.set()
    results = await asyncio.gather(*tasks)
    assert model.sizes == [1, 8, 4]  # 5 + 3 filled a batch; 4 did not fit and went next
    assert [len(result["y"]) for result in results] == [1, 5, 4, 3]
    assert results[3]["y"].tolist() == [[6, 6]] * 3


async def test_incompatible_requests_go_in_separate_batches(make: Make) -> None:
    model = FakeModel(double, hold=True)
    scheduler = await make(model)
    tasks = spawn(scheduler, row(0, width=2))
    await eventually(lambda: scheduler.in_flight == 1)
    tasks += spawn(
        scheduler,
        row(1, width=3),
        row(2, width=2),
        row(3, width=3, rows=2),
        row(4, width=2, dtype=np.float64),
    )
    await eventually(lambda: scheduler.queue_depth == 4)
    model.release.set()
    results = await asyncio.gather(*tasks)
    shapes = [(batch["x"].shape, batch["x"].dtype) for batch in model.batches]
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    assert shapes == [((1, 2), f32), ((3, 3), f32), ((1, 2), f32), ((1, 2), f64)]
    assert results[3]["y"].tolist() == [[6, 6, 6]] * 2


async def test_bytes_tensors_batch_and_split(make: Make) -> None:
    def lengths(inputs: Inputs) -> Inputs:
        text = inputs["text"]
        return {"echo": text, "length": np.array([len(item) for item in text], dtype=np.int64)}

    def texts(*items: bytes) -> Inputs:
        array = np.empty(len(items), dtype=object)
        array[:] = list(items)
        return {"text": array}

    model = FakeModel(lengths, hold=True)
    scheduler = await make(model)
    tasks = spawn(scheduler, texts(b"first"))
    await eventually(lambda: scheduler.in_flight == 1)
    tasks += spawn(scheduler, texts(b"a"), texts(b"bb", b"\x00\xffccc"))
    await eventually(lambda: scheduler.queue_depth == 2)
    model.release.set()
    _, one, two = await asyncio.gather(*tasks)
    assert model.sizes == [1, 3]
    assert one["echo"].dtype == object
    assert one["echo"].tolist() == [b"a"]
    assert two["echo"].tolist() == [b"bb", b"\x00\xffccc"]
    assert two["length"].tolist() == [2, 5]


async def test_parallel_executions_compute_that_many_batches_at_once(make: Make) -> None:
    model = FakeModel(double, hold=True)
    scheduler = await make(model, max_batch_size=1, parallel_executions=2)
    tasks = spawn(scheduler, row(1), row(2), row(3))
    await eventually(lambda: model.running == 2)
    assert (scheduler.in_flight, scheduler.queue_depth) == (2, 1)
    model.release.set()
    await asyncio.gather(*tasks)
    assert model.sizes == [1, 1, 1]
    assert model.max_running == 2


# --- waiting for a preferred size -----------------------------------------------------------


async def test_batch_below_preferred_size_waits_and_leaves_when_it_is_reached(
    make: Make,
) -> None:
    clock = FakeClock()
    model = FakeModel(double)
    scheduler = await make(
        model, clock=clock, preferred_batch_sizes=(4, 8), max_queue_delay_ms=10.0
    )
    tasks = spawn(scheduler, row(1), row(2), row(3))
    await asyncio.sleep(0.03)  # real time passes, the clock does not: still waiting
    assert (scheduler.queue_depth, scheduler.in_flight, model.sizes) == (3, 0, [])
    tasks += spawn(scheduler, row(4))
    await asyncio.sleep(0)
    assert scheduler.in_flight == 4  # preferred size reached: gone at once
    await asyncio.gather(*tasks)
    assert model.sizes == [4]


async def test_queue_delay_counts_from_the_oldest_request(make: Make) -> None:
    clock, recorder = FakeClock(), Recorder()
    model = FakeModel(double)
    scheduler = await make(
        model,
        clock=clock,
        observer=recorder,
        preferred_batch_sizes=(4,),
        max_queue_delay_ms=20.0,
    )
    tasks = spawn(scheduler, row(1))
    await asyncio.sleep(0)
    clock.advance(0.015)
    tasks += spawn(scheduler, row(2))
    await asyncio.sleep(0.005)
    assert model.sizes == []
    clock.advance(0.005)  # 20 ms after the first request: the timer lets the batch go
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert model.sizes == [2]
    assert recorder.waits == [pytest.approx(0.020), pytest.approx(0.005)]


async def test_without_preferred_sizes_a_delay_waits_to_fill_max_batch_size(
    make: Make,
) -> None:
    model = FakeModel(double)
    scheduler = await make(model, max_batch_size=4, max_queue_delay_ms=60_000.0)
    first = spawn(scheduler, row(3, rows=3))
    await asyncio.sleep(0.01)
    assert scheduler.queue_depth == 1
    # A 2-row request cannot join a 3-row batch of at most 4: waiting cannot help, 3 rows go.
    second = spawn(scheduler, row(2, rows=2))
    await asyncio.wait_for(first[0], 2)
    assert scheduler.queue_depth == 1
    # Stopping does not wait for company either.
    await scheduler.stop()
    assert len((await second[0])["y"]) == 2
    assert model.sizes == [3, 2]


# --- refusals, deadlines, cancellation ------------------------------------------------------


async def test_too_many_rows_is_refused_at_once(make: Make) -> None:
    model = FakeModel(double)
    scheduler = await make(model, max_batch_size=8)
    with pytest.raises(InvalidRequest, match=r"'toy'.* at most 8 rows.*has 9"):
        await scheduler.submit(row(1, rows=9))
    assert model.batches == []


@pytest.mark.parametrize(
    "inputs",
    [
        {},
        {"x": np.array(1.0)},
        {"x": np.ones((2, 1)), "z": np.ones((3, 1))},
        {"x": np.ones((0, 2))},
    ],
    ids=["no-inputs", "scalar", "rows-disagree", "zero-rows"],
)
async def test_malformed_requests_are_refused(make: Make, inputs: Inputs) -> None:
    scheduler = await make(FakeModel(double))
    with pytest.raises(InvalidRequest, match="'toy'"):
        await scheduler.submit(inputs)


async def test_full_queue_refuses_at_once_with_a_retry_hint(make: Make) -> None:
    model = FakeModel(double, hold=True)
    scheduler = await make(model, max_batch_size=1, max_queue_size=2)
    tasks = spawn(scheduler, row(1), row(2), row(3))
    await eventually(lambda: scheduler.queue_depth == 2)
    with pytest.raises(QueueFull, match=r"'toy' has 2 requests queued") as refused:
        await scheduler.submit(row(4))
    assert refused.value.retry_after_s == 1.0  # nothing timed yet
    model.release.set()
    await asyncio.gather(*tasks)
    assert not model.saw(4)

    model.release.clear()
    tasks = spawn(scheduler, row(5), row(6), row(7))
    await eventually(lambda: scheduler.queue_depth == 2)
    with pytest.raises(QueueFull) as refused:
        await scheduler.submit(row(8))
    assert 0.1 <= refused.value.retry_after_s <= 30.0
    model.release.set()
    await asyncio.gather(*tasks)


async def test_requests_being_prepared_count_against_the_queue_bound(make: Make) -> None:
    scheduler = await make(FakeModel(double), max_queue_size=2)
    with (
        scheduler.reserve(),  # e.g. two uploads still decoding
        scheduler.reserve(),
        pytest.raises(QueueFull, match="has 2 requests queued"),
        scheduler.reserve(),
    ):
        pass
    with scheduler.reserve():  # released: room again
        pass
    assert (await scheduler.submit(row(1)))["y"][0, 0] == 2


async def test_a_request_over_the_latency_budget_is_refused_at_once(make: Make) -> None:
    def slow_double(inputs: Inputs) -> Inputs:
        time.sleep(0.05)  # each batch takes 50 ms or more: the scheduler learns it
        return double(inputs)

    model = FakeModel(slow_double)
    scheduler = await make(model, max_batch_size=1, max_queue_size=1000, latency_budget_ms=500)
    for value in range(3):
        await scheduler.submit(row(value))
    model.release.clear()
    tasks = spawn(scheduler, row(10))  # computing, held
    await eventually(lambda: model.running == 1)
    refusal: QueueFull | None = None
    while refusal is None:
        try:
            scheduler.check_capacity()
        except QueueFull as exc:
            refusal = exc
            break
        tasks += spawn(scheduler, row(len(tasks)))
        depth = len(tasks) - 1
        await eventually(lambda depth=depth: scheduler.queue_depth == depth)  # type: ignore[misc]
    assert "over its latency budget (latency_budget_ms 500)" in refusal.message
    admitted = scheduler.queue_depth
    # 500 ms holds 10 batches of 50 ms: the one computing, 8 queued and the newcomer's own;
    # fewer when the machine is slower.
    assert 0 <= admitted <= 9
    model.release.set()
    await asyncio.gather(*tasks)


async def _learn_batch_time(
    scheduler: BatchScheduler, model: FakeModel
) -> list[asyncio.Task[Inputs]]:
    """Three timed batches, then one held in compute: the next request waits for it."""
    for value in range(3):
        await scheduler.submit(row(value))
    model.release.clear()
    tasks = spawn(scheduler, row(10))
    await eventually(lambda: model.running == 1)
    return tasks


def _sleepy_double(seconds: float) -> Callable[[Inputs], Inputs]:
    def compute(inputs: Inputs) -> Inputs:
        time.sleep(seconds)
        return double(inputs)

    return compute


async def test_preparation_time_counts_in_the_latency_estimate(make: Make) -> None:
    model = FakeModel(_sleepy_double(0.02))
    scheduler = await make(model, max_batch_size=1, max_queue_size=1000, latency_budget_ms=150)
    tasks = await _learn_batch_time(scheduler, model)
    # The held batch and the newcomer's own: about 40 ms, well within 150 ms.
    scheduler.check_capacity()
    scheduler.check_capacity(unprepared=True)
    with scheduler.reserve():
        await asyncio.sleep(0.2)  # an image that took 200 ms to decode
    scheduler.check_capacity()  # already prepared: still within the budget
    with pytest.raises(QueueFull, match="over its latency budget"):
        scheduler.check_capacity(unprepared=True)  # ~40 ms + ~200 ms to prepare
    model.release.set()
    await asyncio.gather(*tasks)


async def test_a_reserved_request_is_queued_even_if_later_arrivals_filled_the_budget(
    make: Make,
) -> None:
    model = FakeModel(_sleepy_double(0.05))
    scheduler = await make(model, max_batch_size=1, max_queue_size=1000, latency_budget_ms=300)
    tasks = await _learn_batch_time(scheduler, model)
    with scheduler.reserve() as admission:  # admitted; its image decodes while others arrive
        while True:
            try:
                scheduler.check_capacity()
            except QueueFull:
                break
            tasks += spawn(scheduler, row(len(tasks)))
            depth = len(tasks) - 1
            await eventually(lambda depth=depth: scheduler.queue_depth == depth)  # type: ignore[misc]
    queued = scheduler.queue_depth
    late = asyncio.create_task(scheduler.submit(row(7), admission=admission))
    await eventually(lambda: scheduler.queue_depth == queued + 1)
    with pytest.raises(QueueFull):  # a request not admitted beforehand is refused
        await scheduler.submit(row(8))
    model.release.set()
    await asyncio.gather(*tasks)
    assert (await late)["y"][0, 0] == 14


async def test_estimates_learn_how_late_answers_really_come(make: Make) -> None:
    # Preparation alternates between instant and 20 ms: the average (what the estimate uses)
    # is 10 ms, so every other answer comes about 10 ms later than estimated. The scheduler
    # learns that 99th percentile and adds it, so the budget bounds the p99, not the mean.
    scheduler = await make(FakeModel(double), max_batch_size=1, latency_budget_ms=1000)
    await scheduler.submit(row(0))  # one timed batch: estimates start
    assert scheduler.estimate_error_s == 0
    for i in range(200):
        with scheduler.reserve() as admission:
            await asyncio.sleep(0.02 if i % 2 else 0)
        await scheduler.submit(row(i), admission=admission)
    assert 0.005 < scheduler.estimate_error_s < 0.05


async def test_deadline_already_passed_is_refused_at_once(make: Make) -> None:
    clock = FakeClock()
    model = FakeModel(double)
    scheduler = await make(model, clock=clock)
    with pytest.raises(DeadlineExceeded, match="'toy'"):
        await scheduler.submit(row(1), deadline=clock() - 0.001)
    assert model.batches == []


@pytest.mark.parametrize("explicit", [True, False], ids=["deadline", "default-timeout"])
async def test_request_expiring_in_the_queue_fails_on_time_and_is_not_computed(
    make: Make, explicit: bool
) -> None:
    clock = FakeClock()
    model = FakeModel(double, hold=True)
    scheduler = await make(model, clock=clock, default_timeout_ms=None if explicit else 10.0)
    [busy] = spawn(scheduler, row(1))
    await eventually(lambda: scheduler.in_flight == 1)
    late = asyncio.create_task(
        scheduler.submit(row(-5), deadline=clock() + 0.01 if explicit else None)
    )
    await eventually(lambda: scheduler.queue_depth == 1)
    clock.advance(0.02)
    # Answered when the deadline passes (a timer), not when the busy slot frees.
    with pytest.raises(DeadlineExceeded, match=r"'toy'.*not computed"):
        await asyncio.wait_for(late, 2)
    assert scheduler.queue_depth == 0
    model.release.set()
    await busy
    assert not model.saw(-5)


async def test_cancelled_queued_request_is_not_computed(make: Make) -> None:
    recorder = Recorder()
    model = FakeModel(double, hold=True)
    scheduler = await make(model, observer=recorder)
    [busy] = spawn(scheduler, row(1))
    await eventually(lambda: scheduler.in_flight == 1)
    [gone] = spawn(scheduler, row(-7))
    await eventually(lambda: scheduler.queue_depth == 1)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert scheduler.queue_depth == 0
    assert recorder.depths == [1, 0]
    model.release.set()
    await busy
    assert (await scheduler.submit(row(2)))["y"].tolist() == [[4, 4]]
    assert not model.saw(-7)
    assert model.sizes == [1, 1]


async def test_caller_leaving_during_compute_does_not_disturb_the_batch(make: Make) -> None:
    model = FakeModel(double, hold=True)
    scheduler = await make(model, preferred_batch_sizes=(2,), max_queue_delay_ms=60_000.0)
    gone, stays = spawn(scheduler, row(2), row(3))
    await eventually(lambda: model.running == 1)  # one batch of both, held in compute
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert scheduler.in_flight == 2
    model.release.set()
    assert (await stays)["y"].tolist() == [[6, 6]]
    await eventually(lambda: scheduler.in_flight == 0)
    assert model.sizes == [2]
    assert (await scheduler.submit(row(4, rows=2)))["y"].tolist() == [[8, 8]] * 2


# --- model failures ---------------------------------------------------------------------------


async def test_execute_raising_fails_only_its_batch(make: Make) -> None:
    model = FakeModel(fail_on_minus_one, hold=True)
    scheduler = await make(model)
    [bad] = spawn(scheduler, row(-1))
    await eventually(lambda: scheduler.in_flight == 1)
    good = spawn(scheduler, row(1), row(2))
    await eventually(lambda: scheduler.queue_depth == 2)
    model.release.set()
    with pytest.raises(InferenceFailed, match=r"'toy' failed .*RuntimeError: boom") as failed:
        await bad
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert [(await task)["y"].tolist() for task in good] == [[[2, 2]], [[4, 4]]]
    assert model.sizes == [1, 2]


async def test_every_request_of_a_failed_batch_gets_its_own_error(make: Make) -> None:
    model = FakeModel(fail_on_minus_one, hold=True)
    scheduler = await make(model)
    [busy] = spawn(scheduler, row(1))
    await eventually(lambda: scheduler.in_flight == 1)
    tasks = spawn(scheduler, row(-1), row(2))
    await eventually(lambda: scheduler.queue_depth == 2)
    model.release.set()
    await busy
    first, second = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(first, InferenceFailed)
    assert isinstance(second, InferenceFailed)
    assert first is not second  # one error object per caller, one shared cause
    assert first.__cause__ is second.__cause__


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda x: {"y": x[:1]}, r"'toy' returned outputs .*'y' has shape \(1, 2\).* 2 rows"),
        (lambda x: {"y": np.array(1.0)}, r"'y' has shape \(\)"),
        (lambda x: {"y": x.tolist()}, r"'y' has list"),
        (lambda x: [x], r"'toy' returned outputs"),
    ],
    ids=["too-few-rows", "scalar", "not-an-array", "not-a-mapping"],
)
async def test_output_not_matching_the_batch_fails_clearly(
    make: Make, output: Callable[[Array], Any], message: str
) -> None:
    def model(inputs: Inputs) -> Inputs:
        x = inputs["x"]
        return output(x) if (x == -1).any() else double(inputs)

    scheduler = await make(FakeModel(model))
    with pytest.raises(InferenceFailed, match=message):
        await scheduler.submit(row(-1, rows=2))
    assert (await scheduler.submit(row(1, rows=2)))["y"].tolist() == [[2, 2]] * 2


# --- lifecycle and observation ----------------------------------------------------------------


async def test_stop_drains_everything_accepted(make: Make) -> None:
    model = FakeModel(double, hold=True)
    scheduler = await make(model)
    tasks = spawn(scheduler, row(1))
    await eventually(lambda: scheduler.in_flight == 1)
    tasks += spawn(scheduler, row(2), row(3))
    await eventually(lambda: scheduler.queue_depth == 2)
    stopping = asyncio.create_task(scheduler.stop())
    await asyncio.sleep(0.01)
    with pytest.raises(ModelNotReady, match="'toy'"):
        await scheduler.submit(row(4))
    assert not stopping.done()
    model.release.set()
    results = await asyncio.gather(*tasks)
    await asyncio.wait_for(stopping, 2)
    assert [result["y"][0, 0] for result in results] == [2, 4, 6]
    with pytest.raises(ModelNotReady):
        await scheduler.submit(row(5))


async def test_stop_without_drain_fails_queued_and_finishes_computing(make: Make) -> None:
    model = FakeModel(double, hold=True)
    scheduler = await make(model)
    [busy] = spawn(scheduler, row(1))
    await eventually(lambda: scheduler.in_flight == 1)
    [queued] = spawn(scheduler, row(2))
    await eventually(lambda: scheduler.queue_depth == 1)
    stopping = asyncio.create_task(scheduler.stop(drain=False))
    with pytest.raises(ModelNotReady, match="'toy' stopped before computing"):
        await queued
    model.release.set()
    assert (await busy)["y"].tolist() == [[2, 2]]
    await asyncio.wait_for(stopping, 2)
    assert not model.saw(2)


async def test_not_started_or_stopped_scheduler_refuses(executor: ThreadPoolExecutor) -> None:
    scheduler = BatchScheduler("toy", FakeModel(double), BatchPolicy(), executor)
    with pytest.raises(ModelNotReady, match="'toy' is not accepting requests"):
        await scheduler.submit(row(1))
    await scheduler.start()
    await scheduler.stop()
    await scheduler.stop()  # idempotent
    with pytest.raises(ModelNotReady):
        await scheduler.start()


async def test_observer_sees_waits_batches_and_queue_depth(make: Make) -> None:
    clock, recorder = FakeClock(), Recorder()
    model = FakeModel(double, hold=True)
    scheduler = await make(model, clock=clock, observer=recorder)
    tasks = spawn(scheduler, row(1))
    await eventually(lambda: scheduler.in_flight == 1)
    tasks += spawn(scheduler, row(2, rows=2), row(3))
    await eventually(lambda: scheduler.queue_depth == 2)
    clock.advance(0.5)
    model.release.set()
    await asyncio.gather(*tasks)
    await eventually(lambda: len(recorder.batches) == 2)
    assert recorder.waits == [0.0, 0.5, 0.5]
    assert recorder.batches == [(1, 1), (3, 2)]
    assert all(seconds >= 0 for seconds in recorder.compute_seconds)
    assert recorder.depths == [1, 2, 0]


# --- where batches compute -------------------------------------------------------------------


class ThreadRecorder:
    """``fn`` on each batch, noting which thread computed it; sleeps ``slow_s`` when told to."""

    def __init__(self, fn: Callable[[Inputs], Inputs] = double) -> None:
        self.fn = fn
        self.threads: list[int] = []
        self.batch_sizes: list[int] = []
        self.slow_s = 0.0

    def __call__(self, inputs: Inputs) -> Inputs:
        self.threads.append(threading.get_ident())
        self.batch_sizes.append(len(inputs["x"]))
        if self.slow_s:
            time.sleep(self.slow_s)
        return self.fn(inputs)


async def test_a_fast_model_moves_to_the_event_loop_thread_once_it_has_proved_fast(
    make: Make,
) -> None:
    model = ThreadRecorder()
    recorder = Recorder()
    scheduler = await make(model, observer=recorder, inline_below_s=0.05)
    loop_thread = threading.get_ident()
    assert (await scheduler.submit(row(1)))["y"].tolist() == [[2, 2]]
    assert model.threads[0] != loop_thread  # nothing measured yet: a worker thread
    for i in range(2, 40):
        assert (await scheduler.submit(row(i)))["y"].tolist() == [[2 * i, 2 * i]]
    assert model.threads[-1] == loop_thread
    assert scheduler.in_flight == 0
    assert len(recorder.batches) == len(recorder.waits) == 39  # inline batches are observed too


async def test_a_slow_model_always_computes_in_worker_threads(make: Make) -> None:
    model = ThreadRecorder()
    model.slow_s = 0.06
    scheduler = await make(model, inline_below_s=0.05)
    for i in range(3):
        await scheduler.submit(row(i))
    assert threading.get_ident() not in model.threads


async def test_one_slow_batch_does_not_send_a_fast_model_back_to_worker_threads(
    make: Make,
) -> None:
    model = ThreadRecorder()
    scheduler = await make(model, inline_below_s=0.05)
    loop_thread = threading.get_ident()
    for i in range(40):
        await scheduler.submit(row(i))
    assert model.threads[-1] == loop_thread
    model.slow_s = 0.2  # e.g. the process was preempted during one batch
    await scheduler.submit(row(1))
    model.slow_s = 0.0
    await scheduler.submit(row(2))
    assert model.threads[-1] == loop_thread


async def test_a_failing_batch_on_the_event_loop_thread_fails_only_its_requests(
    make: Make,
) -> None:
    model = ThreadRecorder(fail_on_minus_one)
    scheduler = await make(model, inline_below_s=0.05)
    for i in range(40):
        await scheduler.submit(row(i))
    assert model.threads[-1] == threading.get_ident()
    with pytest.raises(InferenceFailed, match="RuntimeError: boom") as failed:
        await scheduler.submit(row(-1))
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert scheduler.in_flight == 0
    assert (await scheduler.submit(row(3)))["y"].tolist() == [[6, 6]]


def _drop_a_row_on_minus_one(inputs: Inputs) -> Inputs:
    outputs = double(inputs)
    return {"y": outputs["y"][1:]} if (inputs["x"] == -1).any() else outputs


async def test_a_fast_model_returning_too_few_rows_fails_that_request_on_the_loop_thread(
    make: Make,
) -> None:
    model = ThreadRecorder(_drop_a_row_on_minus_one)
    scheduler = await make(model, inline_below_s=0.05)
    for i in range(40):
        await scheduler.submit(row(i))
    assert model.threads[-1] == threading.get_ident()
    with pytest.raises(InferenceFailed, match="do not match its batch of 2 rows"):
        await scheduler.submit(row(-1, rows=2))
    assert scheduler.in_flight == 0
    assert (await scheduler.submit(row(3)))["y"].tolist() == [[6, 6]]


def _refuse_minus_one(inputs: Inputs) -> Inputs:
    if (inputs["x"] == -1).any():
        raise InvalidRequest("x must not be -1")
    return double(inputs)


async def test_a_refused_input_on_the_event_loop_thread_fails_only_the_request_at_fault(
    make: Make,
) -> None:
    model = ThreadRecorder(_refuse_minus_one)
    scheduler = await make(
        model, inline_below_s=0.05, max_batch_size=8, max_queue_delay_ms=20,
        preferred_batch_sizes=(2,),
    )  # fmt: skip
    for i in range(40):
        await scheduler.submit(row(i))
    assert model.threads[-1] == threading.get_ident()
    # The queue delay gathers the two into one batch, computed on the loop thread.
    bad, good = await asyncio.gather(
        scheduler.submit(row(-1)), scheduler.submit(row(3)), return_exceptions=True
    )
    assert model.batch_sizes[-3:] == [2, 1, 1]  # the batch, then each request alone
    assert set(model.threads[-3:]) == {threading.get_ident()}
    assert isinstance(bad, InvalidRequest)
    assert good["y"].tolist() == [[6, 6]]  # type: ignore[index]
    assert scheduler.in_flight == 0
