"""``ModelStreamInfer`` (Triton's streaming extension) over a real loopback socket, in-process:
answers and their ids, batching across one stream, errors that leave the stream open, the
window that holds back a client that never reads, cancellation and authentication."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import numpy as np
import pytest
from test_servicer import SETTINGS, Serving, outcome, queue_depth_reaches, rows_request, serve

from infership.dataplane import DataPlane
from infership.metrics import Metrics
from infership.protocols.grpc._pb import SERVICE, pb
from infership.protocols.grpc.servicer import STREAM_WINDOW
from infership.settings import ServerSettings
from test_model import Harness, Held, OneModelRegistry, compute, runtime_of


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


async def serving_for(
    harness: Harness, fn: Any, settings: ServerSettings = SETTINGS, **policy: Any
) -> tuple[Serving, Metrics]:
    metrics = Metrics()
    model = await harness.model(fn, metrics, **policy)
    return await serve(DataPlane(OneModelRegistry(model)), settings), metrics  # type: ignore[arg-type]


def with_id(request: pb.ModelInferRequest, id: str) -> pb.ModelInferRequest:
    request.id = id
    return request


async def sent(requests: Iterable[pb.ModelInferRequest]) -> AsyncIterator[pb.ModelInferRequest]:
    for request in requests:
        yield request


def y_of(response: pb.ModelInferResponse) -> list[float]:
    names = [o.name for o in response.outputs]
    return np.frombuffer(response.raw_output_contents[names.index("y")], "<f4").tolist()


async def test_every_request_on_a_stream_is_answered_with_its_id(harness: Harness) -> None:
    serving, metrics = await serving_for(harness, compute)
    try:
        requests = [with_id(rows_request(i, i), f"r{i}") for i in range(20)]
        answers = [a async for a in serving.stub.ModelStreamInfer(sent(requests))]
        assert [a.error_message for a in answers] == [""] * 20
        by_id = {a.infer_response.id: y_of(a.infer_response) for a in answers}
        assert by_id == {f"r{i}": [2 * i + 1.0, 2 * i + 1.0] for i in range(20)}
        assert {a.infer_response.model_name for a in answers} == {"m"}
        assert outcome(metrics, "success") == 20
    finally:
        await serving.close()


async def test_requests_sent_back_to_back_on_one_stream_are_batched(harness: Harness) -> None:
    held = Held()
    serving, _ = await serving_for(harness, held, max_batch_size=8)
    try:
        call = serving.stub.ModelStreamInfer()
        await call.write(rows_request(0, 0))
        await held.wait_started()  # the first batch computes; the next ones queue behind it
        for i in range(1, 9):
            await call.write(rows_request(i, i))
        await queue_depth_reaches(harness, 8)
        held.release.set()
        await call.done_writing()
        answers = [a async for a in call]
        assert len(answers) == 9
        assert all(not a.error_message for a in answers)
        assert runtime_of(harness.models[0]).batches == [1, 8]
    finally:
        held.release.set()
        await serving.close()


async def test_a_failing_request_gets_an_error_message_and_the_stream_goes_on(
    harness: Harness,
) -> None:
    serving, _ = await serving_for(harness, compute)
    try:
        wrong_shape = with_id(rows_request(1, 2, 3), "bad-shape")
        unknown = with_id(rows_request(1, 1), "unknown-model")
        unknown.model_name = "nope"
        requests = [with_id(rows_request(1, 1), "first"), wrong_shape, unknown]
        requests.append(with_id(rows_request(2, 2), "last"))
        answers = {
            a.infer_response.id: a async for a in serving.stub.ModelStreamInfer(sent(requests))
        }
        assert y_of(answers["first"].infer_response) == [3.0, 3.0]
        assert y_of(answers["last"].infer_response) == [5.0, 5.0]
        assert "'x'" in answers["bad-shape"].error_message
        assert "shape" in answers["bad-shape"].error_message
        assert answers["bad-shape"].infer_response.model_name == "m"
        assert "nope" in answers["unknown-model"].error_message
    finally:
        await serving.close()


async def test_a_model_failure_is_reported_without_its_details(harness: Harness) -> None:
    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("secret path /srv/models")

    serving, _ = await serving_for(harness, broken)
    try:
        (answer,) = [a async for a in serving.stub.ModelStreamInfer(sent([rows_request(1, 1)]))]
        assert "see its log" in answer.error_message
        assert "secret" not in answer.error_message
    finally:
        await serving.close()


async def test_a_message_that_does_not_decode_ends_the_stream_as_invalid_argument(
    harness: Harness,
) -> None:
    serving, _ = await serving_for(harness, compute)
    try:
        call = serving.channel.stream_stream(f"/{SERVICE}/ModelStreamInfer")()
        await call.write(rows_request(1, 1).SerializeToString())
        await call.write(b"\xff\xff\xff")
        await call.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "ModelInferRequest" in (caught.value.details() or "")
    finally:
        await serving.close()


async def test_a_client_that_never_reads_is_held_at_the_window(harness: Harness) -> None:
    held = Held()
    serving, _ = await serving_for(harness, held, max_batch_size=1, max_queue_size=1000)
    try:
        call = serving.stub.ModelStreamInfer()
        for i in range(STREAM_WINDOW + 100):
            await call.write(rows_request(i, i))
        await held.wait_started()
        # One request computes, the rest of the window queues; the others are never read.
        await queue_depth_reaches(harness, STREAM_WINDOW - 1)
        await asyncio.sleep(0.2)
        assert harness.models[0].scheduler.queue_depth == STREAM_WINDOW - 1
        call.cancel()
        await queue_depth_reaches(harness, 0)
    finally:
        held.release.set()
        await serving.close()


async def test_cancelling_a_stream_takes_its_queued_requests_out(harness: Harness) -> None:
    held = Held()
    serving, metrics = await serving_for(harness, held)
    try:
        call = serving.stub.ModelStreamInfer()
        await call.write(rows_request(0, 0))
        await held.wait_started()
        await call.write(rows_request(-1, -1))
        await queue_depth_reaches(harness, 1)
        call.cancel()
        await queue_depth_reaches(harness, 0)
        held.release.set()
        for _ in range(500):
            if outcome(metrics, "cancelled") == 2:
                break
            await asyncio.sleep(0.002)
        assert outcome(metrics, "cancelled") == 2  # the one computing and the one queued
        assert -1.0 not in held.seen
    finally:
        held.release.set()
        await serving.close()


async def test_a_stream_needs_a_key_and_each_request_counts_against_its_rate(
    harness: Harness,
) -> None:
    settings = ServerSettings(
        grpc={"port": 0},
        auth={"tokens": ["k" * 32], "key_rate_limit": {"requests_per_second": 1, "burst": 3}},
    )
    serving, _ = await serving_for(harness, compute, settings)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in serving.stub.ModelStreamInfer(sent([rows_request(1, 1)])):
                pass
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED

        key = (("authorization", "Bearer " + "k" * 32),)
        requests = [with_id(rows_request(i, i), str(i)) for i in range(5)]
        answers = [a async for a in serving.stub.ModelStreamInfer(sent(requests), metadata=key)]
        refused = [a for a in answers if a.error_message]
        assert len(answers) == 5
        assert len(refused) == 2, [a.error_message for a in answers]  # burst of 3, then limited
        assert all("rate" in a.error_message for a in refused)
    finally:
        await serving.close()


async def test_stopping_answers_the_requests_in_progress_then_ends_the_stream(
    harness: Harness,
) -> None:
    held = Held()
    serving, _ = await serving_for(harness, held)
    try:
        call = serving.stub.ModelStreamInfer()
        await call.write(with_id(rows_request(4, 5), "in-progress"))
        await held.wait_started()
        stopping = asyncio.create_task(serving.server.stop(1.0))
        await asyncio.sleep(0.05)
        held.release.set()
        answer = await call.read()
        assert answer.infer_response.id == "in-progress"
        assert y_of(answer.infer_response) == [9.0, 11.0]
        await stopping  # the stream, still open, is cancelled when the grace period ends
        with pytest.raises(grpc.aio.AioRpcError):
            await call.read()
    finally:
        held.release.set()
        await serving.close()


async def test_large_requests_take_more_of_the_window(harness: Harness) -> None:
    """With 4 MiB messages, requests of 2.1 MiB take 34 of the 64 places each: one at a time."""
    held = Held()
    settings = ServerSettings(grpc={"port": 0, "max_message_bytes": 4 * 1024 * 1024})
    serving, _ = await serving_for(harness, held, settings, max_queue_size=100)
    try:
        call = serving.stub.ModelStreamInfer()
        for i in range(3):
            request = rows_request(i, i)
            request.parameters["padding"].string_param = "p" * 2_200_000
            await call.write(request)
        await held.wait_started()
        await asyncio.sleep(0.3)
        assert harness.models[0].scheduler.queue_depth == 0  # the second is not read yet
        held.release.set()
        await call.done_writing()
        assert len([a async for a in call]) == 3
    finally:
        held.release.set()
        await serving.close()
