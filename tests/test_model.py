"""ServedModel batching, queue bounds and deadlines, with a fake runtime that can hold a batch.

The fake computes in the scheduler's worker thread like a real runtime; holding its first batch on
a threading.Event keeps the only execution slot busy, so later requests queue up behind it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from starlette.requests import Request

from infership.batching.policy import BatchPolicy
from infership.dataplane import DataPlane
from infership.errors import ClientDisconnected, DeadlineExceeded, ModelNotFound, QueueFull
from infership.metrics import Metrics
from infership.model import ServedModel
from infership.protocols.rest.app import create_rest_app
from infership.protocols.rest.routes import until_disconnected
from infership.repository.manifest import ModelManifest
from infership.runtimes.fake import FakeRuntime
from infership.settings import ServerSettings
from infership.types import Array, InferenceRequest, TensorSpec

INPUTS = (TensorSpec("x", "FP32", (-1, 2)),)
OUTPUTS = (TensorSpec("y", "FP32", (-1, 2)), TensorSpec("total", "FP32", (-1,)))


def compute(inputs: dict[str, Array]) -> dict[str, Array]:
    """The model, row by row: what every request must get back, batched or not."""
    x = inputs["x"]
    return {"y": x * 2 + 1, "total": x.sum(axis=1)}


class Held:
    """``compute`` that blocks its first batch until ``release`` and records every row it sees."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.seen: list[float] = []

    def __call__(self, inputs: dict[str, Array]) -> dict[str, Array]:
        self.seen.extend(inputs["x"][:, 0].tolist())
        if not self.started.is_set():
            self.started.set()
            assert self.release.wait(10), "test never released the held batch"
        return compute(inputs)

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 5), "the first batch never started"


class Harness:
    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(2, thread_name_prefix="test-preprocess")
        self.models: list[ServedModel] = []
        self.helds: list[Held] = []

    async def model(
        self, fn: Callable[[dict[str, Array]], dict[str, Array]], metrics: Metrics, **policy: Any
    ) -> ServedModel:
        if isinstance(fn, Held):
            self.helds.append(fn)
        manifest = ModelManifest(batching=BatchPolicy(**policy), warmup=False)
        runtime = FakeRuntime(fn, inputs=INPUTS, outputs=OUTPUTS)
        model = ServedModel(
            "m",
            1,
            manifest,
            runtime,
            metrics=metrics.model("m", "1"),
            preprocess_executor=self.executor,
        )
        await model.start()
        self.models.append(model)
        return model

    async def close(self) -> None:
        for held in self.helds:
            held.release.set()
        for model in self.models:
            await model.stop(drain=False)
        self.executor.shutdown(wait=True)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


def request(x: Array, **parameters: Any) -> InferenceRequest:
    return InferenceRequest(inputs={"x": x}, parameters=parameters)


def rows(first: float, count: int) -> Array:
    return np.arange(first, first + 2 * count, dtype=np.float32).reshape(count, 2)


def runtime_of(model: ServedModel) -> FakeRuntime:
    assert isinstance(model.runtime, FakeRuntime)
    return model.runtime


async def queue_reaches(model: ServedModel, depth: int) -> None:
    """Let the submitted tasks run until ``depth`` requests wait behind the held batch."""
    for _ in range(5000):
        if model.scheduler.queue_depth >= depth:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"queue depth {model.scheduler.queue_depth}, expected {depth}")


async def test_concurrent_requests_are_batched_within_max_batch_size(harness: Harness) -> None:
    held = Held()
    model = await harness.model(held, Metrics(), max_batch_size=4)
    # Requests of 1, 2 or 3 rows with distinct values, so a mixed-up row would show.
    xs = [rows(100 * i, 1 + i % 3) for i in range(12)]

    first = asyncio.create_task(model.infer(request(xs[0])))
    await held.wait_started()
    rest = [asyncio.create_task(model.infer(request(x))) for x in xs[1:]]
    await queue_reaches(model, len(rest))
    held.release.set()
    responses = await asyncio.gather(first, *rest)

    batches = runtime_of(model).batches
    assert all(size <= 4 for size in batches), batches
    assert sum(batches) == sum(len(x) for x in xs)
    assert len(batches) < len(xs)  # the queued requests shared batches
    for x, response in zip(xs, responses, strict=True):
        assert list(response.outputs) == ["y", "total"]
        expected = compute({"x": x})
        for name, array in response.outputs.items():
            np.testing.assert_array_equal(array, expected[name])


async def test_full_queue_refuses_at_once(harness: Harness) -> None:
    held = Held()
    model = await harness.model(held, Metrics(), max_queue_size=2)
    first = asyncio.create_task(model.infer(request(rows(0, 1))))
    await held.wait_started()
    queued = [asyncio.create_task(model.infer(request(rows(10 * i, 1)))) for i in (1, 2)]
    await queue_reaches(model, 2)

    async with asyncio.timeout(1):  # at once, not after the held batch
        with pytest.raises(QueueFull, match="max_queue_size") as caught:
            await model.infer(request(rows(-1, 1)))
    assert caught.value.retry_after_s > 0

    held.release.set()
    responses = await asyncio.gather(first, *queued)
    assert [r.outputs["total"].tolist() for r in responses] == [[1.0], [21.0], [41.0]]
    assert -1.0 not in held.seen


async def test_request_timeout_passed_on_arrival_is_never_computed(harness: Harness) -> None:
    held = Held()
    model = await harness.model(held, Metrics())
    first = asyncio.create_task(model.infer(request(rows(0, 1))))
    await held.wait_started()

    with pytest.raises(DeadlineExceeded):
        await model.infer(request(rows(-1, 1), timeout=1))  # 1 µs

    held.release.set()
    await first
    assert -1.0 not in held.seen
    assert model.scheduler.queue_depth == 0


async def test_request_timeout_passing_in_the_queue_is_never_computed(harness: Harness) -> None:
    held = Held()
    model = await harness.model(held, Metrics())
    first = asyncio.create_task(model.infer(request(rows(0, 1))))
    await held.wait_started()

    async with asyncio.timeout(2):  # the deadline fires while the slot is still busy
        with pytest.raises(DeadlineExceeded, match="not computed"):
            await model.infer(request(rows(-1, 1), timeout=20_000))  # 20 ms

    held.release.set()
    await first
    assert -1.0 not in held.seen


class OneModelRegistry:
    """What DataPlane asks of a registry, serving one already-started ServedModel.

    ModelRegistry has no public way to add a ServedModel it did not load from a repository.
    """

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.ready = True

    def get(self, name: str, version: str | None = None) -> ServedModel:
        if name != self.model.name:
            raise ModelNotFound(f"unknown model {name!r}")
        return self.model

    def names(self) -> list[str]:
        return [self.model.name]

    def versions(self, name: str) -> list[int]:
        return [self.model.version]


async def test_full_queue_over_http_is_503_with_retry_after(harness: Harness) -> None:
    metrics = Metrics()
    held = Held()
    model = await harness.model(held, metrics, max_queue_size=1)
    plane = DataPlane(OneModelRegistry(model))  # type: ignore[arg-type]
    app = create_rest_app(plane, ServerSettings(), metrics)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}

    first = asyncio.create_task(model.infer(request(rows(0, 1))))
    await held.wait_started()
    queued = asyncio.create_task(model.infer(request(rows(10, 1))))
    await queue_reaches(model, 1)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        async with asyncio.timeout(1):
            response = await client.post("/v2/models/m/infer", json=body)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert "max_queue_size" in response.json()["error"]
        assert int(response.headers["retry-after"]) >= 1

        held.release.set()
        await asyncio.gather(first, queued)

        # With room in the queue, a deadline that has already passed is the answer.
        response = await client.post(
            "/v2/models/m/infer", json={**body, "parameters": {"timeout": 1}}
        )
        assert response.status_code == 504
        assert "deadline" in response.json()["error"]
        response = await client.post("/v2/models/m/infer", json=body)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
        assert outputs == {"y": [3.0, 5.0], "total": [3.0]}

    def outcome(name: str) -> float | None:
        labels = {"model": "m", "version": "1", "outcome": name}
        return metrics.registry.get_sample_value("infership_requests_total", labels)

    assert outcome("capacity_error") == 2
    assert outcome("success") == 1


async def test_a_client_that_disconnects_while_queued_is_never_computed(
    harness: Harness,
) -> None:
    metrics = Metrics()
    held = Held()
    model = await harness.model(held, metrics)
    plane = DataPlane(OneModelRegistry(model))  # type: ignore[arg-type]
    app = create_rest_app(plane, ServerSettings(), metrics)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn only offers a flag
            await asyncio.sleep(0.01)
        first = asyncio.create_task(model.infer(request(rows(0, 1))))
        await held.wait_started()
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [10, 11]}]}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=0.3) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v2/models/m/infer", json=body)
        for _ in range(500):  # the server notices the closed connection and drops the request
            if model.scheduler.queue_depth == 0:
                break
            await asyncio.sleep(0.002)
        assert model.scheduler.queue_depth == 0
        held.release.set()
        await first
        assert 10.0 not in held.seen
        labels = {"model": "m", "version": "1", "outcome": "cancelled"}
        assert metrics.registry.get_sample_value("infership_requests_total", labels) == 1
    finally:
        server.should_exit = True
        await serving


class Connection:
    """An ASGI receive() whose body is already read: it answers only when the client leaves."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.receives = 0

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def request(self) -> Request:
        return Request({"type": "http", "method": "POST", "headers": []}, self.receive)


async def test_work_that_never_waits_is_answered_without_watching_the_connection() -> None:
    connection = Connection()

    async def instant() -> int:
        return 42

    assert await until_disconnected(connection.receive, instant()) == 42
    for _ in range(3):
        await asyncio.sleep(0)
    assert connection.receives == 0


async def test_a_disconnect_cancels_the_work_and_raises_client_disconnected() -> None:
    connection = Connection()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def queued() -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0  # pragma: no cover - never resolves

    watched = asyncio.create_task(until_disconnected(connection.receive, queued()))
    await started.wait()
    connection.gone.set()
    with pytest.raises(ClientDisconnected):
        await watched
    assert cancelled.is_set()
    assert watched.cancelling() == 0  # the cancellation it used is not left pending


async def test_a_cancellation_from_the_server_stays_a_cancellation() -> None:
    connection = Connection()
    started = asyncio.Event()

    async def queued() -> int:
        started.set()
        await asyncio.Event().wait()
        return 0  # pragma: no cover - never resolves

    watched = asyncio.create_task(until_disconnected(connection.receive, queued()))
    await started.wait()
    await asyncio.sleep(0)  # let the watcher start
    watched.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watched
    assert connection.receives == 1
