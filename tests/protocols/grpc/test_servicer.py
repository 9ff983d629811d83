"""Every rpc of inference.GRPCInferenceService over a real loopback socket, in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest

from conftest import EXAMPLE, reference_preprocess
from infership.app import Application
from infership.dataplane import DataPlane
from infership.metrics import Metrics
from infership.protocols.grpc._pb import SERVICE, pb
from infership.protocols.grpc.generated import health_pb2, health_pb2_grpc
from infership.protocols.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from infership.protocols.grpc.server import GrpcServer
from infership.settings import ServerSettings
from infership.tensors import deserialize_bytes_tensor
from test_model import Harness, Held, OneModelRegistry, compute

Stub = Any

SETTINGS = ServerSettings(grpc={"port": 0}, shutdown={"timeout_s": 5})


class Serving:
    """A started GrpcServer with a channel and a stub; ``close()`` stops both."""

    def __init__(self, server: GrpcServer, channel: grpc.aio.Channel) -> None:
        self.server = server
        self.channel = channel
        self.stub: Any = GRPCInferenceServiceStub(channel)

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(0)


async def serve(plane: DataPlane, settings: ServerSettings = SETTINGS) -> Serving:
    server = GrpcServer(plane, settings)
    port = await server.start()
    return Serving(server, grpc.aio.insecure_channel(f"127.0.0.1:{port}"))


@pytest.fixture(scope="session")
async def example_grpc(example_app: Application) -> AsyncIterator[Serving]:
    """The bundled example over gRPC (model control on), for the whole session."""
    serving = await serve(example_app.dataplane)
    yield serving
    await serving.close()


@pytest.fixture
def stub(example_grpc: Serving) -> Stub:
    return example_grpc.stub


def image_request(*images: bytes, **fields: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=EXAMPLE, **fields)
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[len(images)])
    tensor.contents.bytes_contents.extend(images)
    return request


def outputs_of(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    arrays = {}
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if output.datatype == "BYTES":
            arrays[output.name] = deserialize_bytes_tensor(raw, int(np.prod(output.shape)))
        else:
            dtype = {"FP32": "<f4", "INT64": "<i8"}[output.datatype]
            arrays[output.name] = np.frombuffer(raw, dtype=dtype)
        arrays[output.name] = arrays[output.name].reshape(tuple(output.shape))
    return arrays


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# -- health and metadata ----------------------------------------------------------------------


async def test_liveness_readiness_and_metadata(stub: Stub) -> None:
    assert (await stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
    server = await stub.ServerMetadata(pb.ServerMetadataRequest())
    assert server.name == "infership"
    assert "model_repository" in server.extensions

    metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name=EXAMPLE))
    assert (metadata.name, list(metadata.versions), metadata.platform) == (
        EXAMPLE,
        ["1"],
        "onnxruntime_onnx",
    )
    inputs = [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs]
    assert ("image", "BYTES", [-1]) in inputs
    assert ("logits", "FP32", [-1, 1000]) in [
        (t.name, t.datatype, list(t.shape)) for t in metadata.outputs
    ]


async def test_model_ready_is_false_not_an_error_for_unknown_models_and_versions(
    stub: Stub,
) -> None:
    assert (await stub.ModelReady(pb.ModelReadyRequest(name=EXAMPLE))).ready
    assert (await stub.ModelReady(pb.ModelReadyRequest(name=EXAMPLE, version="1"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name="nope"))).ready
    assert not (await stub.ModelReady(pb.ModelReadyRequest(name=EXAMPLE, version="7"))).ready


# -- inference --------------------------------------------------------------------------------


async def test_an_image_in_typed_bytes_contents_comes_back_labelled(
    stub: Stub, chelsea: bytes, coffee: bytes
) -> None:
    response = await stub.ModelInfer(image_request(chelsea, coffee, id="req-1"))
    assert (response.model_name, response.model_version, response.id) == (EXAMPLE, "1", "req-1")
    outputs = outputs_of(response)
    assert outputs["label"][:, 0].tolist() == [b"Egyptian cat", b"espresso"]
    assert outputs["class_index"][:, 0].tolist() == [285, 967]
    assert outputs["probability"].shape == (2, 5)
    assert not any(o.HasField("contents") for o in response.outputs)


async def test_raw_tensor_input_with_one_requested_output(stub: Stub, chelsea: bytes) -> None:
    pixels = reference_preprocess(chelsea)
    request = pb.ModelInferRequest(model_name=EXAMPLE, raw_input_contents=[pixels.tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=list(pixels.shape))
    request.outputs.add(name="logits")
    response = await stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["logits"]
    logits = outputs_of(response)["logits"]
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) == 285


@pytest.mark.parametrize(
    ("change", "code", "fragment"),
    [
        pytest.param({"model_name": "nope"}, "NOT_FOUND", "unknown model 'nope'", id="model"),
        pytest.param({"model_version": "7"}, "NOT_FOUND", "has no version '7'", id="version"),
        pytest.param({"shape": [1, 3, 2, 2]}, "INVALID_ARGUMENT", "has shape", id="shape"),
        pytest.param({"datatype": "FP64"}, "INVALID_ARGUMENT", "FP64", id="datatype"),
        pytest.param({"datatype": "float"}, "INVALID_ARGUMENT", "'float' is unknown", id="dtype"),
        pytest.param({"output": "nope"}, "INVALID_ARGUMENT", "has no output 'nope'", id="output"),
        pytest.param({"timeout": "soon"}, "INVALID_ARGUMENT", "'timeout'", id="timeout"),
    ],
)
async def test_client_mistakes_get_their_status_code_and_a_message(
    stub: Stub, change: dict[str, Any], code: str, fragment: str
) -> None:
    shape = change.get("shape", [1, 3, 224, 224])
    datatype = change.get("datatype", "FP32")
    size = int(np.prod(shape)) * (8 if datatype == "FP64" else 4)
    request = pb.ModelInferRequest(
        model_name=change.get("model_name", EXAMPLE),
        model_version=change.get("model_version", ""),
        raw_input_contents=[bytes(size)],
    )
    request.inputs.add(name="input", datatype=datatype, shape=shape)
    if "output" in change:
        request.outputs.add(name=change["output"])
    if "timeout" in change:
        request.parameters["timeout"].string_param = change["timeout"]
    error = await rpc_error(stub.ModelInfer(request))
    assert error.code() is getattr(grpc.StatusCode, code)
    assert fragment in (error.details() or "")


# -- model repository -------------------------------------------------------------------------


async def test_repository_index_lists_models_and_filters_ready(stub: Stub) -> None:
    for ready in (False, True):
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=ready))
        assert [(m.name, m.version, m.state) for m in index.models] == [(EXAMPLE, "1", "READY")]


async def test_repository_load_and_unload_errors(stub: Stub, example_app: Application) -> None:
    error = await rpc_error(stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest()))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "model_name is required" in (error.details() or "")

    request = pb.RepositoryModelLoadRequest(model_name=EXAMPLE)
    request.parameters["config"].string_param = "{}"
    error = await rpc_error(stub.RepositoryModelLoad(request))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "load parameters are not supported (config)" in (error.details() or "")

    unload = pb.RepositoryModelUnloadRequest(model_name=EXAMPLE)
    unload.parameters["force"].bool_param = True
    error = await rpc_error(stub.RepositoryModelUnload(unload))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT

    # kserve's proto numbers model_name 1: its load requests arrive as repository_name.
    kserve_style = pb.RepositoryModelLoadRequest(repository_name="nope")
    error = await rpc_error(stub.RepositoryModelLoad(kserve_style))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert "nope" in (error.details() or "")

    locked = await serve(DataPlane(example_app.registry, model_control=False))
    try:
        error = await rpc_error(
            locked.stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=EXAMPLE))
        )
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "--model-control" in (error.details() or "")
    finally:
        await locked.close()


# -- queue, deadlines, cancellation, failures (a fake model that can hold a batch) -------------


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.close()


def rows_request(*values: float, **parameters: Any) -> pb.ModelInferRequest:
    x = np.array([values], dtype=np.float32)
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=[x.tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    for key, value in parameters.items():
        request.parameters[key].int64_param = value
    return request


def outcome(metrics: Metrics, name: str) -> float | None:
    labels = {"model": "m", "version": "1", "outcome": name}
    return metrics.registry.get_sample_value("infership_requests_total", labels)


async def queue_depth_reaches(harness: Harness, depth: int) -> None:
    model = harness.models[0]
    for _ in range(2000):
        if model.scheduler.queue_depth == depth:
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"queue depth {model.scheduler.queue_depth}, expected {depth}")


async def test_fake_model_answers_like_compute(harness: Harness) -> None:
    metrics = Metrics()
    model = await harness.model(compute, metrics)
    serving = await serve(DataPlane(OneModelRegistry(model)))  # type: ignore[arg-type]
    try:
        response = await serving.stub.ModelInfer(rows_request(1, 2))
        outputs = {
            o.name: np.frombuffer(raw, "<f4").tolist()
            for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }
        assert outputs == {"y": [3.0, 5.0], "total": [3.0]}
        assert outcome(metrics, "success") == 1
    finally:
        await serving.close()


async def test_full_queue_is_unavailable_with_a_retry_hint(harness: Harness) -> None:
    metrics = Metrics()
    held = Held()
    model = await harness.model(held, metrics, max_queue_size=1)
    serving = await serve(DataPlane(OneModelRegistry(model)))  # type: ignore[arg-type]
    try:
        first = serving.stub.ModelInfer(rows_request(0, 0))
        await held.wait_started()
        queued = serving.stub.ModelInfer(rows_request(1, 1))
        await queue_depth_reaches(harness, 1)
        error = await rpc_error(serving.stub.ModelInfer(rows_request(2, 2)))
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert "max_queue_size" in (error.details() or "")
        trailers = dict(error.trailing_metadata() or ())
        assert int(trailers["retry-after"]) >= 1
        held.release.set()
        await first
        await queued
        assert outcome(metrics, "capacity_error") == 1
    finally:
        held.release.set()
        await serving.close()


async def test_client_deadline_passing_in_the_queue_is_never_computed(harness: Harness) -> None:
    metrics = Metrics()
    held = Held()
    model = await harness.model(held, metrics)
    serving = await serve(DataPlane(OneModelRegistry(model)))  # type: ignore[arg-type]
    try:
        first = serving.stub.ModelInfer(rows_request(0, 0))
        await held.wait_started()
        late = serving.stub.ModelInfer(rows_request(-1, -1), timeout=0.2)
        error = await rpc_error(late)
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await queue_depth_reaches(harness, 0)  # dropped by our deadline, not only the client's
        held.release.set()
        await first
        assert -1.0 not in held.seen
    finally:
        held.release.set()
        await serving.close()


async def test_a_cancelled_call_leaves_the_queue_and_is_never_computed(harness: Harness) -> None:
    metrics = Metrics()
    held = Held()
    model = await harness.model(held, metrics)
    serving = await serve(DataPlane(OneModelRegistry(model)))  # type: ignore[arg-type]
    try:
        first = serving.stub.ModelInfer(rows_request(0, 0))
        await held.wait_started()
        call = serving.stub.ModelInfer(rows_request(-1, -1))
        await queue_depth_reaches(harness, 1)
        call.cancel()
        await queue_depth_reaches(harness, 0)
        held.release.set()
        await first
        assert -1.0 not in held.seen
        for _ in range(500):
            if outcome(metrics, "cancelled") == 1:
                break
            await asyncio.sleep(0.002)
        assert outcome(metrics, "cancelled") == 1
    finally:
        held.release.set()
        await serving.close()


async def test_a_failing_model_is_internal_without_details(harness: Harness) -> None:
    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("secret path /srv/models")

    model = await harness.model(broken, Metrics())
    serving = await serve(DataPlane(OneModelRegistry(model)))  # type: ignore[arg-type]
    try:
        error = await rpc_error(serving.stub.ModelInfer(rows_request(1, 2)))
        assert error.code() is grpc.StatusCode.INTERNAL
        assert "secret" not in (error.details() or "")
        assert "see its log" in (error.details() or "")
    finally:
        await serving.close()


async def test_stopping_lets_calls_in_progress_finish_and_refuses_new_ones(
    harness: Harness,
) -> None:
    held = Held()
    model = await harness.model(held, Metrics())
    serving = await serve(DataPlane(OneModelRegistry(model)))  # type: ignore[arg-type]
    try:
        in_progress = serving.stub.ModelInfer(rows_request(4, 5))
        await held.wait_started()
        stopping = asyncio.create_task(serving.server.stop())
        await asyncio.sleep(0.05)
        error = await rpc_error(serving.stub.ModelInfer(rows_request(1, 1), timeout=2))
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        held.release.set()
        response = await in_progress
        assert np.frombuffer(response.raw_output_contents[1], "<f4").tolist() == [9.0]
        await stopping
    finally:
        held.release.set()
        await serving.close()


# -- grpc.health.v1 ---------------------------------------------------------------------------


async def test_health_reflects_readiness_per_server_and_model(harness: Harness) -> None:
    model = await harness.model(compute, Metrics())
    plane = DataPlane(OneModelRegistry(model))  # type: ignore[arg-type]
    serving = await serve(plane)
    health = health_pb2_grpc.HealthStub(serving.channel)
    serving_status = health_pb2.HealthCheckResponse.SERVING
    try:
        for service in ("", SERVICE, "m"):
            check = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert check.status == serving_status, service
        error = await rpc_error(health.Check(health_pb2.HealthCheckRequest(service="nope")))
        assert error.code() is grpc.StatusCode.NOT_FOUND

        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == serving_status
        plane.draining = True
        changed = await asyncio.wait_for(watch.read(), timeout=5)
        assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING
        check = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    finally:
        await serving.close()


class Unloadable(OneModelRegistry):
    """OneModelRegistry whose model can be taken off the list of models to serve."""

    listed = True

    def names(self) -> list[str]:
        return super().names() if self.listed else []


async def test_an_unloaded_model_turns_not_serving_in_check_and_list(harness: Harness) -> None:
    model = await harness.model(compute, Metrics())
    registry = Unloadable(model)
    serving = await serve(DataPlane(registry))  # type: ignore[arg-type]
    health = health_pb2_grpc.HealthStub(serving.channel)
    statuses = health_pb2.HealthCheckResponse
    try:
        check = await health.Check(health_pb2.HealthCheckRequest(service="m"))
        assert check.status == statuses.SERVING
        registry.listed = False  # grpcio's servicer kept answering SERVING for it
        check = await health.Check(health_pb2.HealthCheckRequest(service="m"))
        assert check.status == statuses.NOT_SERVING
        listed = await serving.channel.unary_unary(
            "/grpc.health.v1.Health/List",
            response_deserializer=health_pb2.HealthListResponse.FromString,
        )(b"")
        assert {name: s.status for name, s in listed.statuses.items()} == {
            "": statuses.SERVING,
            SERVICE: statuses.SERVING,
            "m": statuses.NOT_SERVING,
        }
        await serving.server.health.shutdown()
        listed = await serving.channel.unary_unary(
            "/grpc.health.v1.Health/List",
            response_deserializer=health_pb2.HealthListResponse.FromString,
        )(b"")
        assert {s.status for s in listed.statuses.values()} == {statuses.NOT_SERVING}
    finally:
        await serving.close()
