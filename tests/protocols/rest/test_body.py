"""The body budget: large request bodies are read only while their bytes fit, in arrival order."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import numpy as np
import orjson
import pytest

from infership.app import Application
from infership.protocols.rest.body import SMALL_BODY_BYTES, BodyBudget

KIB = 1024


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _holding(
    budget: BodyBudget, size: int | None, entered: asyncio.Event, leave: asyncio.Event
) -> None:
    async with budget.hold(size):
        entered.set()
        await leave.wait()


class _Holder:
    """A task holding ``size`` bytes of ``budget`` until told to leave."""

    def __init__(self, budget: BodyBudget, size: int | None) -> None:
        self.entered = asyncio.Event()
        self.leave = asyncio.Event()
        self.task = asyncio.create_task(_holding(budget, size, self.entered, self.leave))

    async def done(self) -> None:
        self.leave.set()
        await self.task


async def test_small_bodies_are_read_without_the_budget() -> None:
    budget = BodyBudget(256 * KIB)
    async with budget.hold(SMALL_BODY_BYTES - 1):
        assert budget.free == 256 * KIB


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


async def test_a_body_larger_than_the_budget_is_read_alone() -> None:
    budget = BodyBudget(256 * KIB)
    huge = _Holder(budget, 10 * 256 * KIB)
    await _settle()
    assert huge.entered.is_set()
    assert budget.free == 0
    other = _Holder(budget, 64 * KIB)
    await _settle()
    assert not other.entered.is_set()
    await huge.done()
    await other.done()
    assert budget.free == 256 * KIB


async def test_a_body_of_unknown_size_takes_the_whole_budget() -> None:
    budget = BodyBudget(256 * KIB)
    chunked = _Holder(budget, None)
    await _settle()
    assert budget.free == 0
    await chunked.done()
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
    async with contextlib.AsyncExitStack() as first:
        await first.enter_async_context(budget.hold(256 * KIB))
        waiter = _Holder(budget, 256 * KIB)
        await _settle()
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
    held = _Holder(budget, None)
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
