"""REST codec: request bodies in, response bodies out, judged by tritonclient's own code."""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.http._utils import _get_inference_request

from infership.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from infership.protocols.rest import codec
from infership.protocols.rest.codec import (
    HEADER_LENGTH,
    compress_body,
    decode_infer_request,
    encode_infer_response,
    encode_json,
)
from infership.types import (
    Array,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    datatype_of,
)

LIMIT = 1 << 20

# The request tritonclient.http sent in the experiment of section 6 of the protocol doc.
CAPTURED_JSON = (
    b'{"id":"req-1","inputs":[{"name":"INPUT0","shape":[2,4],"datatype":"FP32",'
    b'"parameters":{"binary_data_size":32}},{"name":"TEXT","shape":[2],"datatype":"BYTES",'
    b'"parameters":{"binary_data_size":13}}],"parameters":{"binary_data_output":true}}'
)
CAPTURED_BODY = (
    CAPTURED_JSON + np.arange(8, dtype="<f4").tobytes() + b"\x02\x00\x00\x00ab\x03\x00\x00\x00xyz"
)

# One output per datatype, for response round trips.
OUTPUTS: dict[str, Array] = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([0, 255], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 127], dtype=np.int8),
    "INT16": np.array([-32768, 32767], dtype=np.int16),
    "INT32": np.array([[-(2**31)], [2**31 - 1]], dtype=np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "FP16": np.array([0.5, -2.25, 65504.0], dtype=np.float16),
    "FP32": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
    "FP64": np.array([1e-300, 1e300]),
    "BYTES": np.array([b"ab", b"", "é".encode()], dtype=object),
}


def decode(body: bytes, header: int | str | None = None, **kwargs: Any) -> InferenceRequest:
    kwargs.setdefault("max_body_bytes", LIMIT)
    length = None if header is None else str(header)
    return decode_infer_request(body, header_length=length, **kwargs)


def json_body(**doc: Any) -> bytes:
    return orjson.dumps(doc)


def tensor(name: str = "x", datatype: str = "FP32", shape: Any = (1,), **extra: Any) -> Any:
    entry = {"name": name, "datatype": datatype, "shape": list(shape), **extra}
    if "data" not in extra and "parameters" not in extra:
        entry["data"] = [1.0]
    return entry


def triton_request(
    inputs: list[triton.InferInput], outputs: list[triton.InferRequestedOutput] | None = None
) -> tuple[bytes, int | None]:
    body, json_size = _get_inference_request(
        inputs=inputs,
        request_id="",
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        custom_parameters=None,
    )
    return body, json_size


def triton_input(name: str, array: Array, binary: bool = True) -> triton.InferInput:
    entry = triton.InferInput(name, list(array.shape), datatype_of(array))
    entry.set_data_from_numpy(array, binary_data=binary)
    return entry


def parse_with_tritonclient(body: bytes, headers: dict[str, str]) -> triton.InferResult:
    return triton.InferResult.from_response_body(
        body, verbose=False, header_length=headers.get(HEADER_LENGTH)
    )


# --- requests ------------------------------------------------------------------------------


def test_decodes_the_captured_tritonclient_request() -> None:
    request = decode(CAPTURED_BODY, header=237)
    assert len(CAPTURED_JSON) == 237
    assert request.id == "req-1"
    assert request.parameters == {"binary_data_output": True}
    assert request.outputs is None
    assert request.input_parameters == {}
    assert request.inputs["INPUT0"].dtype == np.float32
    assert request.inputs["INPUT0"].tolist() == np.arange(8.0).reshape(2, 4).tolist()
    assert request.inputs["TEXT"].tolist() == [b"ab", b"xyz"]


def test_binary_inputs_are_views_into_the_body() -> None:
    base: Any = decode(CAPTURED_BODY, header=237).inputs["INPUT0"]
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview)
    assert base.obj is CAPTURED_BODY


@pytest.mark.parametrize(
    "binary", [pytest.param(True, id="binary"), pytest.param(False, id="json")]
)
@pytest.mark.parametrize("datatype", sorted(OUTPUTS))
def test_decodes_every_datatype_tritonclient_sends(datatype: str, binary: bool) -> None:
    array = OUTPUTS[datatype]
    body, json_size = triton_request([triton_input("x", array, binary)])
    got = decode(body, header=json_size).inputs["x"]
    assert got.dtype == array.dtype
    assert got.tolist() == array.tolist()


def test_decodes_tritonclient_mixed_binary_and_json_inputs() -> None:
    image = np.random.default_rng(0).random((1, 3, 4, 4), dtype=np.float32)
    inputs = [
        triton_input("image", image),
        triton_input("labels", np.array([b"cat", b"dog"], dtype=object), binary=False),
        triton_input("empty", np.array([], dtype=object)),
        triton_input("scale", np.array([0.5], dtype=np.float64), binary=False),
    ]
    body, json_size = triton_request(inputs)
    request = decode(body, header=json_size)
    assert np.array_equal(request.inputs["image"], image)
    assert request.inputs["labels"].tolist() == [b"cat", b"dog"]
    assert request.inputs["empty"].shape == (0,)
    assert request.inputs["scale"].tolist() == [0.5]
    assert request.parameters == {"binary_data_output": True}


def test_decodes_tritonclient_requested_outputs() -> None:
    outputs = [
        triton.InferRequestedOutput("a"),
        triton.InferRequestedOutput("b", binary_data=False, class_count=3),
    ]
    body, json_size = triton_request([triton_input("x", np.ones(2, np.int32))], outputs)
    request = decode(body, header=json_size)
    assert request.outputs == (
        RequestedOutput("a", {"binary_data": True}),
        RequestedOutput("b", {"classification": 3, "binary_data": False}),
    )
    assert request.parameters == {}


def test_decodes_kserve_style_request() -> None:
    # kserve adds model_name, always sends an id, and sends "data": null beside a binary size.
    doc = {
        "id": "8b4e",
        "model_name": "m",
        "inputs": [
            {"name": "e", "shape": [0], "datatype": "BYTES", "data": None,
             "parameters": {"binary_data_size": 0}},
            {"name": "x", "shape": [2, 2], "datatype": "INT64", "data": [[1, 2], [3, 4]],
             "parameters": {"note": "nested"}},
        ],
    }  # fmt: skip
    request = decode(orjson.dumps(doc), header=len(orjson.dumps(doc)))
    assert request.id == "8b4e"
    assert request.inputs["e"].shape == (0,)
    assert request.inputs["x"].tolist() == [[1, 2], [3, 4]]
    assert request.input_parameters == {"x": {"note": "nested"}}


def test_input_parameters_keep_custom_keys_without_binary_data_size() -> None:
    params = {"binary_data_size": 4, "shared_memory_offset": 0, "custom": "yes"}
    header = json_body(inputs=[tensor(datatype="INT32", parameters=params)])
    request = decode(header + b"\x01\x00\x00\x00", header=len(header))
    assert request.input_parameters == {"x": {"shared_memory_offset": 0, "custom": "yes"}}
    assert request.inputs["x"].tolist() == [1]


def test_unknown_top_level_keys_and_empty_outputs_are_ignored() -> None:
    request = decode(json_body(inputs=[tensor()], model_name="m", extra={"a": 1}, outputs=[]))
    assert request.outputs is None
    assert request.id is None


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "x-gzip", "GZIP"])
def test_compressed_request_round_trip(encoding: str) -> None:
    compress = zlib.compress if encoding == "deflate" else gzip.compress
    request = decode(compress(CAPTURED_BODY), header=237, content_encoding=encoding)
    assert request.inputs["TEXT"].tolist() == [b"ab", b"xyz"]


def test_raw_deflate_and_multi_member_gzip_are_accepted() -> None:
    raw = zlib.compressobj(wbits=-15)
    deflated = raw.compress(CAPTURED_BODY) + raw.flush()
    assert decode(deflated, header=237, content_encoding="deflate").id == "req-1"
    members = gzip.compress(CAPTURED_BODY[:100]) + gzip.compress(CAPTURED_BODY[100:])
    assert decode(members, header=237, content_encoding="gzip").id == "req-1"


def test_identity_encoding_is_plain() -> None:
    assert decode(CAPTURED_BODY, header=237, content_encoding="identity").id == "req-1"


def test_zip_bomb_stops_at_the_limit() -> None:
    packer = zlib.compressobj(wbits=31)  # gzip framing
    chunks = [packer.compress(b" " * LIMIT) for _ in range(16)]
    bomb = b"".join([packer.compress(b"{"), *chunks, packer.flush()])
    assert len(bomb) < LIMIT // 10
    with pytest.raises(PayloadTooLarge, match=f"over the limit of {LIMIT} bytes"):
        decode(bomb, content_encoding="gzip")


def test_decompressed_body_exactly_at_the_limit_is_accepted() -> None:
    body = json_body(inputs=[tensor()])
    assert decode(gzip.compress(body), content_encoding="gzip", max_body_bytes=len(body)).inputs


def test_plain_body_over_the_limit_is_too_large() -> None:
    with pytest.raises(PayloadTooLarge, match="request body is 282 bytes; the limit is 100"):
        decode(CAPTURED_BODY, header=237, max_body_bytes=100)


BAD_INPUTS = [
    # (body, header, encoding, error, message fragment)
    pytest.param(b"", None, None, InvalidRequest, "empty request body", id="empty-body"),
    pytest.param(b"{", None, None, InvalidRequest, "not valid JSON", id="malformed-json"),
    pytest.param(b"[]", None, None, InvalidRequest, "must be a JSON object", id="not-an-object"),
    pytest.param(b"{}", None, None, InvalidRequest, "inputs must be a non-empty", id="no-inputs"),
    pytest.param(
        json_body(inputs={"x": 1}), None, None, InvalidRequest, "inputs must be", id="inputs-dict"
    ),
    pytest.param(json_body(inputs=[]), None, None, InvalidRequest, "non-empty", id="inputs-empty"),
    pytest.param(
        json_body(inputs=[1]), None, None, InvalidRequest, "inputs[0] must be an object",
        id="input-not-object",
    ),
    pytest.param(
        json_body(inputs=[{"datatype": "FP32", "shape": [1], "data": [1]}]), None, None,
        InvalidRequest, "inputs[0].name is required", id="missing-name",
    ),
    pytest.param(
        json_body(inputs=[tensor(name=3)]), None, None, InvalidRequest,
        "inputs[0].name must be a string", id="name-not-str",
    ),
    pytest.param(
        json_body(inputs=[{"name": "x", "shape": [1], "data": [1]}]), None, None,
        InvalidRequest, "inputs[0].datatype is required", id="missing-datatype",
    ),
    pytest.param(
        json_body(inputs=[tensor(datatype="FLOAT32")]), None, None, InvalidRequest,
        "inputs[0].datatype 'FLOAT32' is unknown", id="unknown-datatype",
    ),
    pytest.param(
        json_body(inputs=[tensor(datatype="fp32")]), None, None, InvalidRequest,
        "datatypes are upper case: 'FP32'", id="lowercase-datatype",
    ),
    pytest.param(
        json_body(inputs=[{"name": "x", "datatype": "FP32", "data": [1]}]), None, None,
        InvalidRequest, "inputs[0].shape must be a list of non-negative integers",
        id="missing-shape",
    ),
    pytest.param(
        json_body(inputs=[tensor(), tensor(name="y", shape=[-1])]), None, None, InvalidRequest,
        "inputs[1].shape must be a list of non-negative integers", id="negative-shape",
    ),
    pytest.param(
        json_body(inputs=[tensor(shape=[1.0])]), None, None, InvalidRequest,
        "inputs[0].shape must be", id="float-shape",
    ),
    pytest.param(
        json_body(inputs=[tensor(shape=["1"])]), None, None, InvalidRequest,
        "inputs[0].shape must be", id="str-shape",
    ),
    pytest.param(
        json_body(inputs=[tensor(shape=[True])]), None, None, InvalidRequest,
        "inputs[0].shape must be", id="bool-shape",
    ),
    pytest.param(
        json_body(inputs=[{"name": "x", "datatype": "FP32", "shape": [1]}]), None, None,
        InvalidRequest, "inputs[0] needs data or parameters.binary_data_size", id="no-data",
    ),
    pytest.param(
        json_body(inputs=[tensor(data=[1.0], parameters={"binary_data_size": 4})]), None, None,
        InvalidRequest, "inputs[0] has both data and parameters.binary_data_size",
        id="data-and-binary",
    ),
    pytest.param(
        json_body(inputs=[tensor(parameters={"binary_data_size": -4})]), None, None,
        InvalidRequest, "inputs[0].parameters.binary_data_size must be a non-negative",
        id="negative-binary-size",
    ),
    pytest.param(
        json_body(inputs=[tensor(data=[1.0], parameters={"a": [1]})]), None, None,
        InvalidRequest, "inputs[0].parameters.a must be a string, number or boolean",
        id="list-parameter",
    ),
    pytest.param(
        json_body(inputs=[tensor()], parameters=[1]), None, None, InvalidRequest,
        "parameters must be an object", id="parameters-list",
    ),
    pytest.param(
        json_body(inputs=[tensor(shape=[2, 2], data=[1, 2, 3])]), None, None, InvalidRequest,
        "input 'x': data has 3 elements but shape [2, 2] needs 4", id="count-mismatch",
    ),
    pytest.param(
        json_body(inputs=[tensor(shape=[2], data=[1.0, "2"])]), None, None, InvalidRequest,
        "input 'x': FP32 data must be JSON numbers", id="str-in-fp32",
    ),
    pytest.param(
        json_body(inputs=[tensor(), tensor()]), None, None, InvalidRequest,
        "duplicate input names: 'x'", id="duplicate-inputs",
    ),
    pytest.param(
        json_body(inputs=[tensor()], outputs={"y": 1}), None, None, InvalidRequest,
        "outputs must be a list", id="outputs-not-list",
    ),
    pytest.param(
        json_body(inputs=[tensor()], outputs=[{"parameters": {}}]), None, None, InvalidRequest,
        "outputs[0].name is required", id="output-without-name",
    ),
    pytest.param(
        json_body(inputs=[tensor()], outputs=[{"name": "y"}, {"name": "y"}]), None, None,
        InvalidRequest, "duplicate output names: 'y'", id="duplicate-outputs",
    ),
    pytest.param(
        json_body(inputs=[tensor()], id=5), None, None, InvalidRequest, "id must be a string",
        id="id-not-str",
    ),
    pytest.param(
        CAPTURED_BODY[:-1], 237, None, InvalidRequest,
        "truncated binary data: inputs declare 45 bytes after the JSON, the body has 44",
        id="truncated-binary",
    ),
    pytest.param(
        CAPTURED_BODY + b"\x00", 237, None, InvalidRequest,
        "1 unexpected trailing bytes after the binary data", id="trailing-bytes",
    ),
    pytest.param(
        CAPTURED_JSON.replace(b"size\":32", b"size\":31") + CAPTURED_BODY[237 + 1 :], 237,
        None, InvalidRequest, "input 'INPUT0': expected 32 bytes for FP32 [2, 4], got 31",
        id="blob-size-disagrees-with-shape",
    ),
    pytest.param(
        CAPTURED_JSON, None, None, InvalidRequest,
        f"the body has 0 (binary data needs the {HEADER_LENGTH} header)", id="missing-header",
    ),
    pytest.param(
        CAPTURED_BODY, "abc", None, InvalidRequest, f"{HEADER_LENGTH} must be a non-negative",
        id="header-not-a-number",
    ),
    pytest.param(
        CAPTURED_BODY, "-237", None, InvalidRequest, f"{HEADER_LENGTH} must be a non-negative",
        id="header-negative",
    ),
    pytest.param(
        CAPTURED_BODY, "2.5", None, InvalidRequest, f"{HEADER_LENGTH} must be a non-negative",
        id="header-float",
    ),
    pytest.param(
        CAPTURED_BODY, "283", None, InvalidRequest,
        f"{HEADER_LENGTH} is 283 but the (decompressed) body has only 282 bytes",
        id="header-larger-than-body",
    ),
    pytest.param(
        CAPTURED_BODY, "9" * 5000, None, InvalidRequest, "body has only 282 bytes",
        id="header-huge",
    ),
    pytest.param(CAPTURED_BODY, 0, None, InvalidRequest, "empty request body", id="header-zero"),
    pytest.param(
        CAPTURED_BODY, 200, None, InvalidRequest, "not valid JSON", id="header-too-short",
    ),
    pytest.param(
        b"not gzip at all", None, "gzip", InvalidRequest, "not valid gzip data", id="bad-gzip",
    ),
    pytest.param(
        gzip.compress(CAPTURED_BODY)[:-12], 237, "gzip", InvalidRequest,
        "compressed request body is truncated", id="truncated-gzip",
    ),
    pytest.param(
        zlib.compress(CAPTURED_BODY) + b"junk", 237, "deflate", InvalidRequest,
        "4 unexpected bytes after the compressed body", id="deflate-trailing-junk",
    ),
    pytest.param(
        CAPTURED_BODY, 237, "br", UnsupportedMediaType, "Content-Encoding 'br' is not supported",
        id="brotli",
    ),
    pytest.param(
        CAPTURED_BODY, 237, "gzip, identity", UnsupportedMediaType, "is not supported",
        id="stacked-encodings",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("body", "header", "encoding", "error", "message"), BAD_INPUTS)
def test_bad_requests_are_rejected(
    body: bytes,
    header: int | str | None,
    encoding: str | None,
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error) as caught:
        decode(body, header=header, content_encoding=encoding)
    assert type(caught.value) is error
    assert message in str(caught.value)


# Large JSON tensors: exact, checked like small ones, and bounded in the values they may hold.

LARGE = 20_000  # elements: a body well over 64 KiB (where pysimdjson used to take over)

LARGE_TENSORS = {
    "FP32": np.random.default_rng(1).standard_normal(LARGE).astype(np.float32),
    "FP16": np.linspace(-65504, 65504, LARGE).astype(np.float16),
    "FP64": np.random.default_rng(2).standard_normal(LARGE),
    "INT8": np.resize(np.array([-128, 0, 127], dtype=np.int8), LARGE),
    "INT64": np.resize(np.array([-(2**63), 0, 2**63 - 1], dtype=np.int64), LARGE),
    "UINT32": np.resize(np.array([0, 2**32 - 1], dtype=np.uint32), LARGE),
    "UINT64": np.resize(np.array([0, 2**64 - 1], dtype=np.uint64), LARGE),
}


def tensor_body(datatype: str, shape: list[int], data: Any) -> bytes:
    doc = {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


@pytest.mark.parametrize("datatype", sorted(LARGE_TENSORS))
def test_large_json_tensors_decode_exactly(datatype: str) -> None:
    array = LARGE_TENSORS[datatype]
    got = decode(tensor_body(datatype, [2, LARGE // 2], array)).inputs["x"]
    assert got.dtype == array.dtype
    assert got.shape == (2, LARGE // 2)
    assert got.tobytes() == array.tobytes()


def test_a_json_body_with_more_values_than_the_limit_is_refused_before_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec, "MAX_JSON_VALUES", 1000)
    monkeypatch.setattr(codec.orjson, "loads", _never_parsed)
    # 1000 commas between the numbers, 3 between the input's fields, 3 brackets, 2 braces.
    with pytest.raises(PayloadTooLarge, match="holds up to 1008 values; the limit is 1000"):
        decode(tensor_body("UINT8", [1001], [1] * 1001))


def test_a_json_body_at_the_value_limit_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "MAX_JSON_VALUES", 1000)
    # 989 + 3 commas, 3 brackets and 2 braces: 997 values at most.
    got = decode(tensor_body("UINT8", [990], [1] * 990)).inputs["x"]
    assert got.shape == (990,)


def test_the_value_limit_bounds_the_json_of_a_binary_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec, "MAX_JSON_VALUES", 100)
    binary = {"name": "x", "datatype": "UINT8", "shape": [1], "parameters": {"binary_data_size": 1}}
    parameters = {f"p{i}": i for i in range(200)}
    header = orjson.dumps({"inputs": [binary], "parameters": parameters})
    with pytest.raises(PayloadTooLarge, match="the limit is 100"):
        decode(header + b"\x07", header=str(len(header)))


def _never_parsed(*args: Any) -> Any:
    raise AssertionError("a body over the value limit reached the JSON parser")


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT8", [1] * (LARGE - 1) + [128], "INT8 data out of range [-128, 127]"),
        ("UINT8", [1] * (LARGE - 1) + [-1], "UINT8 data out of range [0, 255]"),
        ("INT32", [1] * (LARGE - 1) + [1.5], "INT32 data must be JSON integers"),
        ("FP32", [1.0] * (LARGE - 1) + ["1"], "FP32 data must be JSON numbers"),
        ("FP32", [[1.0] * (LARGE - 1), [2.0]], "data is ragged or holds non-numbers"),
        ("FP32", [1.0] * (LARGE + 1), f"data has {LARGE + 1} elements but shape"),
    ],
    ids=["int-out-of-range", "negative-unsigned", "float-in-int", "string", "ragged", "count"],
)
def test_large_json_tensors_are_checked_like_small_ones(
    datatype: str, data: list[Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        decode(tensor_body(datatype, [LARGE], data))


def test_large_nested_json_tensor_is_accepted() -> None:
    array = LARGE_TENSORS["FP32"].reshape(100, -1)
    got = decode(tensor_body("FP32", list(array.shape), array.tolist())).inputs["x"]
    assert got.tobytes() == array.tobytes()


def test_large_invalid_json_names_the_problem() -> None:
    body = tensor_body("FP32", [LARGE], [1.0] * LARGE)[:-3]
    with pytest.raises(InvalidRequest, match="request body is not valid JSON"):
        decode(body)


# --- responses -----------------------------------------------------------------------------


def response_of(outputs: dict[str, Array], **kwargs: Any) -> InferenceResponse:
    return InferenceResponse(model_name="m", model_version="1", outputs=outputs, **kwargs)


def request_with(
    outputs: tuple[RequestedOutput, ...] | None = None, **parameters: Any
) -> InferenceRequest:
    return InferenceRequest(inputs={}, outputs=outputs, parameters=parameters)


@pytest.mark.parametrize(
    "binary", [pytest.param(True, id="binary"), pytest.param(False, id="json")]
)
@pytest.mark.parametrize("datatype", sorted(OUTPUTS))
def test_tritonclient_parses_every_datatype_we_send(datatype: str, binary: bool) -> None:
    array = OUTPUTS[datatype]
    body, headers = encode_infer_response(
        response_of({"y": array}), request_with(binary_data_output=binary)
    )
    assert (HEADER_LENGTH in headers) is binary
    got = parse_with_tritonclient(body, headers).as_numpy("y")
    assert got.shape == array.shape
    if datatype == "BYTES" and not binary:
        # tritonclient hands JSON BYTES back as str (protocol doc 1.9).
        assert got.tolist() == [item.decode() for item in array.tolist()]
    else:
        assert got.dtype == array.dtype
        assert got.tolist() == array.tolist()


def test_response_to_the_captured_request_has_the_documented_layout() -> None:
    request = decode(CAPTURED_BODY, header=237)
    outputs = {
        "OUTPUT0": request.inputs["INPUT0"] * 2,
        "TEXT_OUT": np.array([b"AB", b"XYZ"], dtype=object),
    }
    body, headers = encode_infer_response(response_of(outputs), request)
    json_length = int(headers[HEADER_LENGTH])
    assert headers["Content-Type"] == "application/octet-stream"
    assert orjson.loads(body[:json_length]) == {
        "model_name": "m",
        "model_version": "1",
        "id": "req-1",
        "outputs": [
            {"name": "OUTPUT0", "datatype": "FP32", "shape": [2, 4],
             "parameters": {"binary_data_size": 32}},
            {"name": "TEXT_OUT", "datatype": "BYTES", "shape": [2],
             "parameters": {"binary_data_size": 13}},
        ],
    }  # fmt: skip
    assert len(body) == json_length + 32 + 13
    assert body[-13:] == b"\x02\x00\x00\x00AB\x03\x00\x00\x00XYZ"
    result = parse_with_tritonclient(body, headers)
    assert np.array_equal(result.as_numpy("OUTPUT0"), outputs["OUTPUT0"])
    assert result.as_numpy("TEXT_OUT").tolist() == [b"AB", b"XYZ"]


def test_compressed_response_parses_with_tritonclient() -> None:
    outputs = {"y": np.arange(1000, dtype=np.float32)}
    body, headers = encode_infer_response(
        response_of(outputs), request_with(binary_data_output=True)
    )
    compressed, encoding = compress_body(body, "gzip")
    assert encoding == "gzip"
    result = triton.InferResult.from_response_body(
        compressed, header_length=headers[HEADER_LENGTH], content_encoding=encoding
    )
    assert np.array_equal(result.as_numpy("y"), outputs["y"])


@pytest.mark.parametrize(
    ("requested", "binary_data_output", "expected"),
    [
        pytest.param(None, None, {"a": False, "b": False}, id="default-json"),
        pytest.param(None, True, {"a": True, "b": True}, id="binary-data-output"),
        pytest.param(None, "true", {"a": True, "b": True}, id="binary-data-output-str"),
        pytest.param(
            (RequestedOutput("a", {"binary_data": False}), RequestedOutput("b")),
            True,
            {"a": False, "b": True},
            id="listed-output-inherits-request-default",
        ),
        pytest.param(
            (RequestedOutput("a", {"binary_data": True}), RequestedOutput("b")),
            None,
            {"a": True, "b": False},
            id="explicit-binary-data",
        ),
    ],
)
def test_binary_choice_per_output(
    requested: tuple[RequestedOutput, ...] | None,
    binary_data_output: Any,
    expected: dict[str, bool],
) -> None:
    parameters = {} if binary_data_output is None else {"binary_data_output": binary_data_output}
    outputs = {"a": np.ones(2, np.int32), "b": np.zeros(3, np.float32)}
    body, headers = encode_infer_response(
        response_of(outputs), request_with(requested, **parameters)
    )
    json_length = int(headers.get(HEADER_LENGTH, len(body)))
    entries = orjson.loads(body[:json_length])["outputs"]
    assert {entry["name"]: "data" not in entry for entry in entries} == expected
    result = parse_with_tritonclient(body, headers)
    assert result.as_numpy("a").tolist() == [1, 1]
    assert result.as_numpy("b").tolist() == [0.0, 0.0, 0.0]


def test_json_response_headers_and_flat_data() -> None:
    outputs = {"y": np.arange(6, dtype=np.int64).reshape(2, 3)}
    body, headers = encode_infer_response(response_of(outputs), request_with())
    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(body) == {
        "model_name": "m",
        "model_version": "1",
        "outputs": [
            {"name": "y", "datatype": "INT64", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]}
        ],
    }


def test_outputs_keep_response_order() -> None:
    outputs = {"z": np.ones(1, np.int8), "a": np.ones(1, np.int8)}
    body, _ = encode_infer_response(response_of(outputs), request_with())
    assert [entry["name"] for entry in orjson.loads(body)["outputs"]] == ["z", "a"]


def test_id_and_parameters_only_when_present() -> None:
    request = InferenceRequest(inputs={}, id="abc")
    body, _ = encode_infer_response(response_of({}, parameters={"took_ms": 3}), request)
    doc = orjson.loads(body)
    assert doc["id"] == "abc"
    assert doc["parameters"] == {"took_ms": 3}
    plain = orjson.loads(encode_infer_response(response_of({}), request_with())[0])
    assert "id" not in plain
    assert "parameters" not in plain


def test_non_utf8_bytes_output_goes_binary_even_when_json_was_asked() -> None:
    outputs = {"raw": np.array([b"\xff\xfe", b"ok"], dtype=object), "n": np.ones(1, np.uint8)}
    body, headers = encode_infer_response(response_of(outputs), request_with())
    entries = orjson.loads(body[: int(headers[HEADER_LENGTH])])["outputs"]
    assert entries[0]["parameters"] == {"binary_data_size": 12}
    assert entries[1]["data"] == [1]
    assert parse_with_tritonclient(body, headers).as_numpy("raw").tolist() == [b"\xff\xfe", b"ok"]


def test_float32_json_is_written_without_float64_noise() -> None:
    body, _ = encode_infer_response(response_of({"y": np.array([0.1], np.float32)}), request_with())
    assert b'"data":[0.1]' in body


def test_response_round_trips_through_our_own_decoder() -> None:
    # Our response layout is the request layout, so the decoder can read what we encode.
    body, headers = encode_infer_response(
        response_of({"y": OUTPUTS["FP16"]}), request_with(binary_data_output=True)
    )
    doc = orjson.loads(body[: int(headers[HEADER_LENGTH])])
    request_body = orjson.dumps({"inputs": doc["outputs"]}) + body[int(headers[HEADER_LENGTH]) :]
    header = len(request_body) - len(body) + int(headers[HEADER_LENGTH])
    got = decode(request_body, header=header).inputs["y"]
    assert got.tolist() == OUTPUTS["FP16"].tolist()


# --- helpers for other endpoints -----------------------------------------------------------


def test_encode_json_handles_numpy() -> None:
    assert encode_json({"v": np.arange(2, dtype=np.int32), "ok": True}) == b'{"v":[0,1],"ok":true}'


@pytest.mark.parametrize(
    ("accept_encoding", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("br", None, id="brotli-only"),
        pytest.param("*", None, id="wildcard"),
        pytest.param("identity", None, id="identity"),
        pytest.param("gzip", "gzip", id="gzip"),
        pytest.param("deflate", "deflate", id="deflate"),
        pytest.param("gzip, deflate, br", "gzip", id="aiohttp-default"),
        pytest.param("br, deflate", "deflate", id="deflate-over-brotli"),
        pytest.param("GZip;q=0.5", "gzip", id="case-and-quality"),
        pytest.param("gzip;q=0, deflate", "deflate", id="gzip-refused"),
        pytest.param("gzip; q=bad", None, id="bad-quality"),
    ],
)
def test_compress_body_follows_accept_encoding(
    accept_encoding: str | None, expected: str | None
) -> None:
    body = b'{"outputs":[]}' * 20
    compressed, encoding = compress_body(body, accept_encoding)
    assert encoding == expected
    if encoding is None:
        assert compressed is body
    else:
        decompress = gzip.decompress if encoding == "gzip" else zlib.decompress
        assert decompress(compressed) == body
        assert len(compressed) < len(body)


def test_gzip_output_is_deterministic() -> None:
    assert compress_body(b"x" * 100, "gzip") == compress_body(b"x" * 100, "gzip")


def test_struct_layout_of_bytes_matches_length_prefix() -> None:
    body, headers = encode_infer_response(
        response_of({"t": np.array([b"abc"], dtype=object)}), request_with(binary_data_output=True)
    )
    tail = body[int(headers[HEADER_LENGTH]) :]
    assert struct.unpack_from("<I", tail)[0] == 3
    assert tail[4:] == b"abc"


def _binary_request(values: np.ndarray, **parameters: Any) -> tuple[bytes, str]:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": list(values.shape),
                    "parameters": {"binary_data_size": values.nbytes},
                }
            ],
            "parameters": parameters,
        }
    )
    return header + values.tobytes(), str(len(header))


def test_a_repeated_binary_header_is_parsed_once_but_every_request_gets_its_own_data() -> None:
    first_body, length = _binary_request(np.arange(4, dtype=np.float32), priority=1)
    second_body, same_length = _binary_request(np.arange(4, 8, dtype=np.float32), priority=1)
    assert same_length == length
    first = decode_infer_request(first_body, header_length=length, max_body_bytes=1 << 20)
    assert codec._SEEN_HEADERS[first_body[: int(length)]] is not None
    first.parameters["timeout"] = 5  # a transport may add to its request's parameters
    second = decode_infer_request(second_body, header_length=length, max_body_bytes=1 << 20)
    assert second.inputs["x"].tolist() == [4, 5, 6, 7]
    assert first.inputs["x"].tolist() == [0, 1, 2, 3]
    assert second.parameters == {"priority": 1}


def test_a_bad_header_is_refused_every_time_and_never_remembered() -> None:
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]}'
    for _ in range(2):
        with pytest.raises(InvalidRequest, match=r"needs data or parameters\.binary_data_size"):
            decode_infer_request(body, header_length=str(len(body)), max_body_bytes=1 << 20)
    assert body not in codec._SEEN_HEADERS


def test_json_data_is_never_remembered() -> None:
    body = b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1.5]}]}'
    decode_infer_request(body, header_length=None, max_body_bytes=1 << 20)
    assert body not in codec._SEEN_HEADERS
