"""The body budget: large request bodies are read only while their bytes fit, in arrival order."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import orjson
import pytest

from infership.app import Application
from infership.errors import PayloadTooLarge, RequestTimeout
from infership.protocols.rest.body import SMALL_BODY_BYTES, BodyBudget

KIB = 1024


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _holding(
    budget: BodyBudget, size: int, entered: asyncio.Event, leave: asyncio.Event
) -> None:
    await budget.acquire(size)
    try:
        entered.set()
        await leave.wait()
    finally:
        budget.release(size)


class _Holder:
    """A task holding ``size`` bytes of ``budget`` until told to leave."""

    def __init__(self, budget: BodyBudget, size: int) -> None:
        self.entered = asyncio.Event()
        self.leave = asyncio.Event()
        self.task = asyncio.create_task(_holding(budget, size, self.entered, self.leave))

    async def done(self) -> None:
        self.leave.set()
        await self.task


async def test_a_body_waits_until_its_bytes_fit() -> None:
    budget = BodyBudget(256 * KIB)
    first = _Holder(budget, 200 * KIB)
    await _settle()
    second = _Holder(budget, 100 * KIB)
    await _settle()
    assert first.entered.is_set()
    assert not second.entered.is_set()
    assert budget.free == 56 * KIB

    await first.done()
    await _settle()
    assert second.entered.is_set()
    assert budget.free == 156 * KIB
    await second.done()
    assert budget.free == 256 * KIB


async def test_a_smaller_body_does_not_overtake_a_waiting_larger_one() -> None:
    budget = BodyBudget(256 * KIB)
    first = _Holder(budget, 128 * KIB)
    await _settle()
    large = _Holder(budget, 256 * KIB)
    await _settle()
    small = _Holder(budget, 64 * KIB)  # would fit beside the first, but arrived after `large`
    await _settle()
    assert not large.entered.is_set()
    assert not small.entered.is_set()

    await first.done()
    await _settle()
    assert large.entered.is_set()
    assert not small.entered.is_set()
    await large.done()
    await _settle()
    assert small.entered.is_set()
    await small.done()
    assert budget.free == 256 * KIB


async def test_a_cancelled_waiter_leaves_its_place_to_those_behind_it() -> None:
    budget = BodyBudget(256 * KIB)
    first = _Holder(budget, 128 * KIB)
    await _settle()
    gone = _Holder(budget, 256 * KIB)
    await _settle()
    behind = _Holder(budget, 64 * KIB)
    await _settle()
    assert not behind.entered.is_set()

    gone.task.cancel()
    await _settle()
    assert behind.entered.is_set()  # fits beside the first now that the large one left
    assert gone.task.cancelled()
    await first.done()
    await behind.done()
    assert budget.free == 256 * KIB


async def test_a_waiter_cancelled_as_it_is_granted_gives_the_bytes_back() -> None:
    budget = BodyBudget(256 * KIB)
    await budget.acquire(256 * KIB)
    waiter = _Holder(budget, 256 * KIB)
    await _settle()
    budget.release(256 * KIB)
    # Leaving granted the waiter's future without yielding: the waiter has not resumed yet.
    waiter.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter.task
    assert not waiter.entered.is_set()
    assert budget.free == 256 * KIB


def test_a_budget_needs_a_positive_capacity() -> None:
    with pytest.raises(ValueError, match="positive capacity"):
        BodyBudget(0)


async def test_a_large_json_request_waits_for_the_budget_and_then_is_answered(
    example_app: Application, client: httpx.AsyncClient, chelsea: bytes
) -> None:
    budget: BodyBudget = example_app.rest.state.body_budget
    pixels = np.zeros((1, 3, 224, 224), dtype=np.float32)
    tensor = {"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32"}
    json_body = orjson.dumps({"inputs": [{**tensor, "data": pixels.ravel().tolist()}]})
    assert len(json_body) > SMALL_BODY_BYTES
    infer = "/v2/models/efficientnet-lite0/infer"
    held = _Holder(budget, budget.capacity)
    await _settle()
    large = asyncio.create_task(
        client.post(infer, content=json_body, headers={"content-type": "application/json"})
    )
    # A small body is not held up by the budget: an upload is answered meanwhile.
    small = await client.post("/predict", files={"img": ("chelsea.jpg", chelsea)})
    assert small.status_code == 200
    await asyncio.sleep(0.2)
    assert not large.done()

    await held.done()
    response = await asyncio.wait_for(large, 30)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]
    assert budget.free == budget.capacity


# --- reading under the budget: no client holds it (issue 16, F3) -------------------------------


class _Sender:
    """An ASGI ``receive`` fed by the test: ``send`` a chunk, ``finish`` the body, or stall."""

    def __init__(self) -> None:
        self._messages: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    def send(self, size: int) -> None:
        self._messages.put_nowait({"type": "http.request", "body": b"x" * size, "more_body": True})

    def finish(self, size: int = 0) -> None:
        self._messages.put_nowait({"type": "http.request", "body": b"x" * size})

    async def receive(self) -> dict[str, object]:
        return await self._messages.get()


async def _read(budget: BodyBudget, sender: _Sender, declared: int | None, **kw: bool) -> int:
    async with budget.read(sender.receive, 1 << 30, declared, **kw) as body:  # type: ignore[arg-type]
        return len(body)


@pytest.fixture
def quick_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BodyBudget, "WINDOW_S", 0.05)


async def test_a_trickling_body_does_not_queue_before_its_first_bytes_are_in() -> None:
    budget = BodyBudget(256 * KIB)
    trickler = _Sender()
    trickler.send(10)  # of a declared 60 MB: nothing reserved for it yet
    slow = asyncio.create_task(_read(budget, trickler, 60_000_000))
    await _settle()
    assert budget.free == budget.capacity
    upload = _Sender()
    upload.finish(200 * KIB)
    assert await asyncio.wait_for(_read(budget, upload, 200 * KIB), 1) == 200 * KIB
    slow.cancel()


async def test_a_body_that_stalls_while_others_wait_is_cut_off_and_its_bytes_freed(
    quick_window: None,
) -> None:
    budget = BodyBudget(1024 * KIB)
    staller = _Sender()
    staller.send(SMALL_BODY_BYTES)  # enough to queue, then nothing
    stalled = asyncio.create_task(_read(budget, staller, None))
    await _settle()
    assert budget.free == 0  # unknown size: the whole budget, while it keeps arriving
    upload = _Sender()
    upload.finish(512 * KIB)
    assert await asyncio.wait_for(_read(budget, upload, 512 * KIB), 1) == 512 * KIB
    with pytest.raises(RequestTimeout, match="while other bodies waited for memory"):
        await stalled
    assert budget.free == budget.capacity


async def test_a_body_that_keeps_arriving_keeps_its_share(quick_window: None) -> None:
    budget = BodyBudget(1024 * KIB)
    sender = _Sender()
    sender.send(SMALL_BODY_BYTES)
    reading = asyncio.create_task(_read(budget, sender, 1024 * KIB))
    await _settle()
    waiter = _Sender()
    waiter.finish(512 * KIB)
    waiting = asyncio.create_task(_read(budget, waiter, 512 * KIB))
    for _ in range(12):  # 8 KiB every 10 ms: 800 KiB/s, over the 64 KiB/s floor, for 2 windows
        sender.send(8 * KIB)
        await asyncio.sleep(0.01)
    assert not waiting.done()
    sender.finish(1024 * KIB - SMALL_BODY_BYTES - 12 * 8 * KIB)
    assert await asyncio.wait_for(reading, 1) == 1024 * KIB
    assert await asyncio.wait_for(waiting, 1) == 512 * KIB


async def test_a_slow_body_with_nobody_waiting_keeps_its_share(quick_window: None) -> None:
    budget = BodyBudget(1024 * KIB)
    sender = _Sender()
    sender.send(SMALL_BODY_BYTES)
    reading = asyncio.create_task(_read(budget, sender, 512 * KIB))
    await asyncio.sleep(0.2)  # four windows with nothing sent
    assert budget.free == budget.capacity - 512 * KIB
    sender.finish(512 * KIB - SMALL_BODY_BYTES)
    assert await asyncio.wait_for(reading, 1) == 512 * KIB


async def test_a_body_larger_than_the_budget_is_read_alone() -> None:
    budget = BodyBudget(256 * KIB)
    sender = _Sender()
    sender.send(SMALL_BODY_BYTES)
    huge = asyncio.create_task(_read(budget, sender, 10 * 256 * KIB))
    await _settle()
    assert budget.free == 0
    sender.finish(10 * 256 * KIB - SMALL_BODY_BYTES)
    assert await huge == 10 * 256 * KIB
    assert budget.free == budget.capacity


async def test_a_body_of_unknown_size_reserves_the_whole_budget() -> None:
    budget = BodyBudget(256 * KIB)
    sender = _Sender()
    sender.send(SMALL_BODY_BYTES)
    chunked = asyncio.create_task(_read(budget, sender, None))
    await _settle()
    assert budget.free == 0
    sender.finish(10)
    assert await chunked == SMALL_BODY_BYTES + 10
    assert budget.free == budget.capacity


async def test_a_compressed_body_is_charged_the_whole_budget_however_small() -> None:
    budget = BodyBudget(1024 * KIB)
    sender = _Sender()
    sender.finish(100)
    async with budget.read(sender.receive, 1 << 20, 100, encoded=True) as body:  # type: ignore[arg-type]
        assert len(body) == 100
        assert budget.free == 0  # it may inflate to the body limit when decoded
    assert budget.free == budget.capacity


async def test_a_small_plain_body_is_read_outside_the_budget() -> None:
    budget = BodyBudget(1024 * KIB)
    sender = _Sender()
    sender.finish(100)
    async with budget.read(sender.receive, 1 << 20, 100) as body:  # type: ignore[arg-type]
        assert len(body) == 100
        assert budget.free == budget.capacity


async def test_a_declared_body_over_the_limit_is_refused_before_it_is_read() -> None:
    budget = BodyBudget(1024 * KIB)
    sender = _Sender()  # sends nothing: a refusal that read would wait for ever
    with pytest.raises(PayloadTooLarge, match="5000 bytes is over the limit of 1000"):
        async with budget.read(sender.receive, 1000, 5000):  # type: ignore[arg-type]
            pass
