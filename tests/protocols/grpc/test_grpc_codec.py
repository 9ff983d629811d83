"""ModelInferRequest/Response ⇄ infership.types, without a server."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infership.errors import ClientError, InvalidRequest
from infership.protocols.grpc._pb import pb
from infership.protocols.grpc.codec import (
    decode_infer_request,
    decode_parameters,
    encode_infer_response,
    encode_parameter,
    timeout_parameter,
)
from infership.protocols.grpc.errors import MAX_DETAILS_BYTES, details_for
from infership.tensors import serialize_bytes_tensor
from infership.types import InferenceRequest, InferenceResponse

TYPED = [
    ("BOOL", "bool_contents", [True, False], np.bool_),
    ("UINT8", "uint_contents", [0, 255], np.uint8),
    ("UINT16", "uint_contents", [0, 65535], np.uint16),
    ("UINT32", "uint_contents", [0, 2**32 - 1], np.uint32),
    ("UINT64", "uint64_contents", [0, 2**64 - 1], np.uint64),
    ("INT8", "int_contents", [-128, 127], np.int8),
    ("INT16", "int_contents", [-(2**15), 2**15 - 1], np.int16),
    ("INT32", "int_contents", [-(2**31), 2**31 - 1], np.int32),
    ("INT64", "int64_contents", [-(2**63), 2**63 - 1], np.int64),
    ("FP32", "fp32_contents", [1.5, -2.25], np.float32),
    ("FP64", "fp64_contents", [1e300, -0.5], np.float64),
]


def message(*tensors: dict[str, Any], raw: list[bytes] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=raw or [])
    for tensor in tensors:
        contents = tensor.pop("contents", None)
        added = request.inputs.add(**tensor)
        if contents is not None:
            added.contents.CopyFrom(pb.InferTensorContents(**contents))
    return request


@pytest.mark.parametrize(("datatype", "field", "values", "dtype"), TYPED)
def test_typed_contents_decode_to_the_datatype(
    datatype: str, field: str, values: list[Any], dtype: type
) -> None:
    request = message(
        {"name": "x", "datatype": datatype, "shape": [1, 2], "contents": {field: values}}
    )
    array = decode_infer_request(request).inputs["x"]
    assert array.dtype == dtype
    assert array.shape == (1, 2)
    assert array.tolist() == [values]


@pytest.mark.parametrize(("datatype", "field", "values", "dtype"), TYPED)
def test_raw_contents_decode_to_the_datatype(
    datatype: str, field: str, values: list[Any], dtype: type
) -> None:
    expected = np.array(values, dtype=dtype)
    request = message({"name": "x", "datatype": datatype, "shape": [2]}, raw=[expected.tobytes()])
    assert decode_infer_request(request).inputs["x"].tolist() == values


def test_fp16_travels_raw_and_is_refused_as_typed_contents() -> None:
    half = np.array([0.5, -1.0, 65504.0], dtype=np.float16)
    request = message({"name": "h", "datatype": "FP16", "shape": [3]}, raw=[half.tobytes()])
    decoded = decode_infer_request(request).inputs["h"]
    assert decoded.dtype == np.float16
    assert decoded.tolist() == half.tolist()

    typed = message(
        {"name": "h", "datatype": "FP16", "shape": [1], "contents": {"fp32_contents": [1.0]}}
    )
    with pytest.raises(InvalidRequest, match="FP16 has no typed contents field; send it in raw"):
        decode_infer_request(typed)


def test_bytes_in_typed_and_raw_form() -> None:
    words = [b"ab", b"", b"\xff\x00"]
    typed = message(
        {"name": "s", "datatype": "BYTES", "shape": [3], "contents": {"bytes_contents": words}}
    )
    assert decode_infer_request(typed).inputs["s"].tolist() == words
    blob = serialize_bytes_tensor(np.array(words, dtype=object))
    raw = message({"name": "s", "datatype": "BYTES", "shape": [3, 1]}, raw=[blob])
    assert decode_infer_request(raw).inputs["s"].reshape(-1).tolist() == words


def test_raw_entries_belong_in_order_to_inputs_without_typed_contents() -> None:
    # kserve's client puts list inputs in typed contents and numpy inputs in raw, in one request.
    a = np.array([1, 2], dtype=np.int32)
    c = np.array([3.5], dtype=np.float32)
    request = message(
        {"name": "a", "datatype": "INT32", "shape": [2]},
        {"name": "b", "datatype": "INT64", "shape": [1], "contents": {"int64_contents": [7]}},
        {"name": "c", "datatype": "FP32", "shape": [1]},
        raw=[a.tobytes(), c.tobytes()],
    )
    inputs = decode_infer_request(request).inputs
    assert inputs["a"].tolist() == [1, 2]
    assert inputs["b"].tolist() == [7]
    assert inputs["c"].tolist() == [3.5]


@pytest.mark.parametrize(
    ("tensors", "raw", "error"),
    [
        pytest.param([], [], "inputs must hold at least one tensor", id="no-inputs"),
        pytest.param(
            [{"name": "x", "datatype": "INT32", "shape": [1]}],
            [],
            "input 'x' has no data",
            id="no-data",
        ),
        pytest.param(
            [{"name": "x", "datatype": "INT32", "shape": [1]}],
            [b"\x01\x00\x00\x00", b"\x02\x00\x00\x00"],
            "raw_input_contents has 2 entries but 1 inputs have no typed contents",
            id="raw-count",
        ),
        pytest.param(
            [{"name": "x", "datatype": "INT32", "shape": [2]}],
            [b"\x01\x00\x00\x00"],
            "expected 8 bytes for INT32 \\[2\\], got 4",
            id="raw-size",
        ),
        pytest.param(
            [{"name": "x", "datatype": "fp32", "shape": [1]}],
            [b"\x00" * 4],
            "datatype 'fp32' is unknown; datatypes are upper case: 'FP32'",
            id="lower-case-datatype",
        ),
        pytest.param(
            [{"name": "x", "datatype": "FP8", "shape": [1]}],
            [b"\x00"],
            "datatype 'FP8' is unknown",
            id="unknown-datatype",
        ),
        pytest.param(
            [
                {"name": "x", "datatype": "FP32", "shape": [1]},
                {"name": "x", "datatype": "FP32", "shape": [1]},
            ],
            [b"\x00" * 4, b"\x00" * 4],
            "duplicate input names: 'x'",
            id="duplicate-input",
        ),
        pytest.param(
            [{"name": "x", "datatype": "FP32", "shape": [2], "contents": {"fp32_contents": [1]}}],
            [],
            "contents.fp32_contents has 1 elements but shape \\[2\\] needs 2",
            id="typed-count",
        ),
        pytest.param(
            [{"name": "x", "datatype": "FP32", "shape": [1], "contents": {"int_contents": [1]}}],
            [],
            "FP32 data belongs in contents.fp32_contents, got contents.int_contents",
            id="typed-wrong-field",
        ),
        pytest.param(
            [{"name": "x", "datatype": "INT8", "shape": [1], "contents": {"int_contents": [200]}}],
            [],
            "INT8 data out of range \\[-128, 127\\]",
            id="typed-out-of-range",
        ),
        pytest.param(
            [{"name": "x", "datatype": "FP32", "shape": [-1], "contents": {"fp32_contents": []}}],
            [],
            "shape must be a list of non-negative integers",
            id="negative-shape",
        ),
    ],
)
def test_malformed_requests_are_refused_naming_the_problem(
    tensors: list[dict[str, Any]], raw: list[bytes], error: str
) -> None:
    with pytest.raises(InvalidRequest, match=error):
        decode_infer_request(message(*tensors, raw=raw))


def test_requested_outputs_and_parameters_are_passed_through() -> None:
    request = message({"name": "x", "datatype": "UINT8", "shape": [1]}, raw=[b"\x01"])
    request.id = "req-7"
    request.parameters["flag"].bool_param = True
    request.parameters["n"].int64_param = -3
    request.parameters["s"].string_param = "hi"
    request.parameters["f"].double_param = 0.25
    request.parameters["priority"].uint64_param = 2**64 - 1
    request.inputs[0].parameters["note"].string_param = "x"
    out = request.outputs.add(name="y")
    out.parameters["classification"].int64_param = 3
    request.outputs.add(name="z")

    decoded = decode_infer_request(request)
    assert decoded.id == "req-7"
    assert decoded.parameters == {
        "flag": True,
        "n": -3,
        "s": "hi",
        "f": 0.25,
        "priority": 2**64 - 1,
    }
    assert decoded.input_parameters == {"x": {"note": "x"}}
    assert decoded.outputs is not None
    assert [(o.name, dict(o.parameters)) for o in decoded.outputs] == [
        ("y", {"classification": 3}),
        ("z", {}),
    ]


def test_duplicate_requested_outputs_and_empty_parameters_are_refused() -> None:
    request = message({"name": "x", "datatype": "UINT8", "shape": [1]}, raw=[b"\x01"])
    request.outputs.add(name="y")
    request.outputs.add(name="y")
    with pytest.raises(InvalidRequest, match="duplicate output names: 'y'"):
        decode_infer_request(request)
    with pytest.raises(InvalidRequest, match="parameter 'empty' has no value"):
        decode_parameters({"empty": pb.InferParameter()})


@pytest.mark.parametrize(
    ("value", "field"),
    [(True, "bool_param"), (3, "int64_param"), (0.5, "double_param"), ("s", "string_param")],
)
def test_parameters_round_trip(value: Any, field: str) -> None:
    parameter = encode_parameter(value)
    assert parameter.WhichOneof("parameter_choice") == field
    assert decode_parameters({"k": parameter}) == {"k": value}


def test_response_outputs_are_all_raw_in_order_with_the_id_echoed() -> None:
    response = InferenceResponse(
        "m",
        "2",
        {
            "label": np.array([[b"cat", b"dog"]], dtype=object),
            "half": np.array([1.0, 2.0], dtype=np.float16),
            "big": np.arange(6, dtype=">i4").reshape(2, 3),  # big-endian in, little-endian out
        },
        parameters={"note": "ok"},
    )
    encoded = encode_infer_response(response, InferenceRequest(inputs={}, id="abc"))
    assert (encoded.model_name, encoded.model_version, encoded.id) == ("m", "2", "abc")
    assert [(o.name, o.datatype, list(o.shape)) for o in encoded.outputs] == [
        ("label", "BYTES", [1, 2]),
        ("half", "FP16", [2]),
        ("big", "INT32", [2, 3]),
    ]
    assert not any(o.HasField("contents") for o in encoded.outputs)
    label, half, big = encoded.raw_output_contents
    assert label == b"\x03\x00\x00\x00cat\x03\x00\x00\x00dog"
    assert np.frombuffer(half, dtype="<f2").tolist() == [1.0, 2.0]
    assert np.frombuffer(big, dtype="<i4").tolist() == list(range(6))
    assert encoded.parameters["note"].string_param == "ok"
    assert encode_infer_response(response, InferenceRequest(inputs={})).id == ""


@pytest.mark.parametrize(
    ("given", "remaining", "expected"),
    [
        pytest.param({}, None, None, id="no-deadline"),
        pytest.param({"timeout": 5}, None, None, id="own-timeout-stands"),
        pytest.param({}, 0.5, 500_000, id="deadline-becomes-timeout"),
        pytest.param({"timeout": 1_000}, 0.5, 1_000, id="tighter-own-timeout-wins"),
        pytest.param({"timeout": 9_000_000}, 0.5, 500_000, id="tighter-deadline-wins"),
        pytest.param({}, -1.0, 1, id="passed-deadline-is-1us"),
        pytest.param({"timeout": 0}, 0.5, 500_000, id="zero-is-no-timeout-of-its-own"),
        pytest.param({"timeout": 2.5}, 0.5, 2.5, id="fractional-timeout"),
        pytest.param({"timeout": 2**64 - 1}, 0.5, 500_000, id="huge-timeout-yields"),
        pytest.param({"timeout": 1e300}, None, None, id="huge-timeout-stands"),
    ],
)
def test_grpc_deadline_tightens_the_timeout_parameter(
    given: dict[str, Any], remaining: float | None, expected: int | None
) -> None:
    assert timeout_parameter(given, remaining) == expected


@pytest.mark.parametrize("remaining", [None, 0.5, -1.0], ids=["no-deadline", "deadline", "passed"])
@pytest.mark.parametrize(
    "timeout",
    ["abc", "", -5, -0.5, math.nan, math.inf, -math.inf, True, False],
    ids=["string", "empty", "negative", "negative-double", "nan", "inf", "-inf", "true", "false"],
)
def test_a_bad_timeout_parameter_is_refused_whatever_the_deadline(
    timeout: Any, remaining: float | None
) -> None:
    # A deadline used to replace it silently; NaN passed even without one.
    with pytest.raises(InvalidRequest, match=r"^parameter 'timeout' must be a non-negative number"):
        timeout_parameter({"timeout": timeout}, remaining)


def test_long_status_messages_are_clipped_on_a_character_boundary() -> None:
    assert details_for("short") == "short"
    clipped = details_for("é" * MAX_DETAILS_BYTES)
    assert len(clipped.encode()) <= MAX_DETAILS_BYTES + 30
    assert clipped.endswith(f"... ({MAX_DETAILS_BYTES} more bytes)")


# -- property: whatever a well-formed message carries, the codec answers or refuses --------

PARAMETERS = st.one_of(
    st.builds(pb.InferParameter, bool_param=st.booleans()),
    st.builds(pb.InferParameter, int64_param=st.integers(-(2**63), 2**63 - 1)),
    st.builds(pb.InferParameter, uint64_param=st.integers(0, 2**64 - 1)),
    st.builds(pb.InferParameter, double_param=st.floats()),
    st.builds(pb.InferParameter, string_param=st.text(max_size=8)),
    st.just(pb.InferParameter()),
)
CONTENT_FIELDS = sorted({field for _, field, _, _ in TYPED} | {"bytes_contents"})
DIMENSIONS = st.one_of(
    st.integers(-3, 4), st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 2**32, 2**63 - 1])
)


@st.composite
def infer_messages(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["x", "y", ""])),
            datatype=draw(st.sampled_from([*(d for d, *_ in TYPED), "FP16", "BYTES", "bf16"])),
            shape=draw(st.lists(DIMENSIONS, max_size=4)),
        )
        if draw(st.booleans()):
            field = draw(st.sampled_from(CONTENT_FIELDS))
            count = draw(st.integers(0, 6))
            values = {
                "bool_contents": [True] * count,
                "bytes_contents": [b"ab"] * count,
                "fp32_contents": [1.5] * count,
                "fp64_contents": [math.nan] * count,
                "int_contents": [-(2**31)] * count,
                "int64_contents": [2**63 - 1] * count,
                "uint_contents": [2**32 - 1] * count,
                "uint64_contents": [2**64 - 1] * count,
            }[field]
            getattr(tensor.contents, field).extend(values)
            tensor.contents.SetInParent()
        if draw(st.booleans()):
            tensor.parameters["p"].CopyFrom(draw(PARAMETERS))
    request.raw_input_contents.extend(draw(st.lists(st.binary(max_size=24), max_size=3)))
    for name in draw(st.lists(st.sampled_from(["y", "z"]), max_size=3)):
        request.outputs.add(name=name)
    if draw(st.booleans()):
        request.parameters["timeout"].CopyFrom(draw(PARAMETERS))
    return request


@settings(max_examples=400, deadline=None)
@given(request=infer_messages(), remaining=st.none() | st.floats(-1, 10))
def test_any_message_decodes_or_is_refused_as_the_clients_mistake(
    request: pb.ModelInferRequest, remaining: float | None
) -> None:
    refusal = ""
    try:
        decoded = decode_infer_request(request)
        timeout_parameter(decoded.parameters, remaining)
    except ClientError as exc:  # anything else fails the test
        refusal = exc.message
    assert "<class" not in refusal
