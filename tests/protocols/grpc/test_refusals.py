"""A real ``infership serve`` refuses hostile gRPC requests with the client's status code and a
clear message, never UNKNOWN, INTERNAL or a Python repr, and keeps serving afterwards.

Regressions of issue 16: F6 (an empty tensor with a huge dimension), F7 (messages that do not
decode, health service names that are not UTF-8), F8 (a bad ``timeout`` parameter hidden by
the call's deadline). The requests are sent over a socket by a plain grpc channel, as a
hostile client would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import EXAMPLE, RunningServer
from infership.protocols.grpc._pb import SERVICE, pb
from infership.protocols.grpc.errors import MAX_DETAILS_BYTES
from infership.protocols.grpc.generated import health_pb2, health_pb2_grpc
from infership.protocols.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceStub

pytestmark = pytest.mark.e2e

HEALTH = "grpc.health.v1.Health"
HUGE = 2**63 - 1
CORRUPT = b"\xff\xff\xff\xff"  # a field tag whose varint never ends: no message parses it
NOT_UTF8 = b"\x0a\x02\xff\xfe"  # field 1 (a string in every message that has one): bad UTF-8

INFERENCE_METHODS = [
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
]


@pytest.fixture(scope="module")
def channel(example_server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(example_server.grpc_address) as channel:
        yield channel


@pytest.fixture
def stub(channel: grpc.Channel) -> Any:
    return GRPCInferenceServiceStub(channel)


def raw_call(channel: grpc.Channel, path: str, payload: bytes, *, stream: bool = False) -> Any:
    """Send ``payload`` as the request message, bytes as they are (identity serializers)."""
    if stream:
        return list(channel.unary_stream(path)(payload, timeout=10))
    return channel.unary_unary(path)(payload, timeout=10)


def refusal(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value


def assert_clear(error: grpc.RpcError, code: grpc.StatusCode, fragment: str) -> None:
    details = error.details() or ""
    assert error.code() is code, details
    assert fragment in details
    assert "<class" not in details
    assert "Traceback" not in details


def assert_still_serving(channel: grpc.Channel) -> None:
    assert GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest(), timeout=10).live
    health = health_pb2_grpc.HealthStub(channel)
    check = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    assert check.status == health_pb2.HealthCheckResponse.SERVING


# -- F7: requests that do not decode ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "stream"),
    [(f"/{SERVICE}/{method}", False) for method in INFERENCE_METHODS]
    + [(f"/{HEALTH}/Check", False), (f"/{HEALTH}/List", False), (f"/{HEALTH}/Watch", True)],
)
def test_a_message_that_does_not_decode_is_invalid_argument_on_every_method(
    channel: grpc.Channel, path: str, stream: bool
) -> None:
    error = refusal(raw_call, channel, path, CORRUPT, stream=stream)
    assert_clear(error, grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid ")
    assert "message: " in (error.details() or "")
    assert_still_serving(channel)


def test_garbage_model_infer_bytes_name_the_message_type(channel: grpc.Channel) -> None:
    error = refusal(raw_call, channel, f"/{SERVICE}/ModelInfer", b"\x00garbage\xff" * 8)
    assert_clear(
        error,
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request is not a valid inference.ModelInferRequest message",
    )
    assert_still_serving(channel)


@pytest.mark.parametrize("method", ["Check", "Watch"])
def test_a_health_service_name_that_is_not_utf8_is_invalid_argument(
    channel: grpc.Channel, method: str
) -> None:
    error = refusal(raw_call, channel, f"/{HEALTH}/{method}", NOT_UTF8, stream=method == "Watch")
    assert_clear(
        error,
        grpc.StatusCode.INVALID_ARGUMENT,
        "the request is not a valid grpc.health.v1.HealthCheckRequest message: String field"
        " had bad UTF-8",
    )
    assert_still_serving(channel)


def test_health_list_answers_every_service(channel: grpc.Channel) -> None:
    # grpcio's aio servicer has no List: it answered UNIMPLEMENTED with a Python repr.
    answer = raw_call(channel, f"/{HEALTH}/List", b"")
    listed = health_pb2.HealthListResponse.FromString(answer)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert {name: s.status for name, s in listed.statuses.items()} == {
        "": serving,
        SERVICE: serving,
        EXAMPLE: serving,
    }


# -- F6: empty tensors with a huge dimension --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "datatype", "typed"),
    [
        ("input", "FP32", False),
        ("input", "FP32", True),
        ("image", "BYTES", False),
        ("image", "BYTES", True),
    ],
)
def test_an_empty_tensor_with_a_huge_dimension_is_invalid_argument(
    channel: grpc.Channel, stub: Any, name: str, datatype: str, typed: bool
) -> None:
    request = pb.ModelInferRequest(model_name=EXAMPLE)
    tensor = request.inputs.add(name=name, datatype=datatype, shape=[0, HUGE])
    if typed:
        field = "bytes_contents" if datatype == "BYTES" else "fp32_contents"
        getattr(tensor.contents, field).extend([])
        tensor.contents.SetInParent()  # typed, with no elements
    else:
        request.raw_input_contents.append(b"")
    error = refusal(stub.ModelInfer, request, timeout=10)
    assert_clear(
        error,
        grpc.StatusCode.INVALID_ARGUMENT,
        f"input {name!r}: shape [0, {HUGE}] has over 4294967296 elements",
    )
    assert_still_serving(channel)


# -- F8: the timeout parameter ----------------------------------------------------------------


def image_request(image: bytes, **parameter: Any) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=EXAMPLE)
    request.inputs.add(name="image", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
        image
    )
    for field, value in parameter.items():
        setattr(request.parameters["timeout"], field, value)
    return request


@pytest.mark.parametrize("deadline", [None, 30.0], ids=["no-deadline", "deadline"])
@pytest.mark.parametrize(
    "parameter",
    [
        {"string_param": "abc"},
        {"int64_param": -5},
        {"double_param": math.nan},
        {"double_param": math.inf},
        {"double_param": -math.inf},
        {"double_param": -0.5},
        {"bool_param": True},
    ],
    ids=["string", "negative", "nan", "inf", "-inf", "negative-double", "bool"],
)
def test_a_bad_timeout_parameter_is_invalid_argument_with_or_without_a_deadline(
    channel: grpc.Channel,
    stub: Any,
    chelsea: bytes,
    parameter: dict[str, Any],
    deadline: float | None,
) -> None:
    error = refusal(stub.ModelInfer, image_request(chelsea, **parameter), timeout=deadline)
    assert_clear(
        error,
        grpc.StatusCode.INVALID_ARGUMENT,
        "parameter 'timeout' must be a non-negative number of microseconds",
    )
    assert_still_serving(channel)


def test_a_huge_timeout_parameter_yields_to_the_call_deadline(stub: Any, chelsea: bytes) -> None:
    # As over REST, a timeout longer than any wait is valid: the tighter deadline wins.
    response = stub.ModelInfer(image_request(chelsea, uint64_param=2**64 - 1), timeout=30)
    assert response.model_name == EXAMPLE


# -- messages that quote what the client sent -------------------------------------------------


def test_a_refusal_quoting_a_long_name_keeps_its_status_code(
    channel: grpc.Channel, stub: Any
) -> None:
    # Unclipped, the message outgrew the client's 16 KiB metadata limit: RESOURCE_EXHAUSTED.
    request = pb.ModelMetadataRequest(name="m" * 100_000)
    error = refusal(stub.ModelMetadata, request, timeout=10)
    assert_clear(error, grpc.StatusCode.NOT_FOUND, "unknown model 'mmm")
    details = error.details() or ""
    assert len(details.encode()) < MAX_DETAILS_BYTES + 100
    assert details.endswith("more bytes)")
    assert_still_serving(channel)


# -- fuzz: bytes near a valid request ---------------------------------------------------------

CLIENT_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
}


def _valid_infer_request() -> bytes:
    request = pb.ModelInferRequest(model_name=EXAMPLE, id="r")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 3, 2, 2])
    tensor.parameters["p"].double_param = 1.5
    request.outputs.add(name="logits")
    request.parameters["timeout"].int64_param = 1_000_000
    request.raw_input_contents.append(bytes(48))
    return request.SerializeToString()


VALID = _valid_infer_request()


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid ModelInferRequest with bytes flipped, cut, or spliced in; or pure noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=256))
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        match draw(st.sampled_from(["flip", "cut", "splice"])):
            case "flip":
                data[at] = draw(st.integers(0, 255))
            case "cut":
                del data[at:]
                if not data:
                    break
            case "splice":
                data[at:at] = draw(st.binary(min_size=1, max_size=12))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=near_valid())
def test_fuzzed_infer_bytes_get_a_client_status_and_a_clear_message(
    channel: grpc.Channel, payload: bytes
) -> None:
    try:
        raw_call(channel, f"/{SERVICE}/ModelInfer", payload)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
    assert code in CLIENT_CODES, (code, details, payload)
    assert "<class" not in details
    assert len(details.encode()) < MAX_DETAILS_BYTES + 100


def test_the_server_serves_after_the_fuzzing(channel: grpc.Channel) -> None:
    assert_still_serving(channel)
