"""Wire-neutral tensor conversions: raw little-endian bytes, BYTES layout, JSON lists."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.utils

from infership.errors import InvalidRequest
from infership.tensors import (
    deserialize_bytes_tensor,
    serialize_bytes_tensor,
    tensor_from_list,
    tensor_from_raw,
    tensor_to_json_data,
    tensor_to_raw,
)
from infership.types import Array, datatype_of

# One tensor per OIP datatype, with edge values (extremes, empty BYTES elements).
SAMPLES: dict[str, Array] = {
    "BOOL": np.array([[True, False, False], [False, True, True]]),
    "UINT8": np.array([0, 7, 255], dtype=np.uint8),
    "UINT16": np.array([[0, 65535]], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "INT8": np.array([-128, 0, 127], dtype=np.int8),
    "INT16": np.array([-32768, 32767], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1], [1, 2]], dtype=np.int32),
    "INT64": np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    "FP16": np.array([0.5, -2.25, 65504.0], dtype=np.float16),
    "FP32": np.arange(8, dtype=np.float32).reshape(2, 4) / 3,
    "FP64": np.array([1e-300, -1.5, 1e300]),
    "BYTES": np.array([[b"ab", b""], ["é".encode(), b"xyz"]], dtype=object),
}


def _assert_same(got: Array, want: Array) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_raw_round_trip_for_every_datatype(datatype: str) -> None:
    array = SAMPLES[datatype]
    raw = tensor_to_raw(array)
    _assert_same(tensor_from_raw("x", datatype, list(array.shape), raw), array)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_json_round_trip_for_every_datatype(datatype: str) -> None:
    array = SAMPLES[datatype]
    wire = orjson.loads(orjson.dumps(tensor_to_json_data(array), option=orjson.OPT_SERIALIZE_NUMPY))
    _assert_same(tensor_from_list("x", datatype, list(array.shape), wire), array)


def test_raw_tensor_is_a_view_of_the_buffer() -> None:
    buffer = bytearray(np.arange(4, dtype=np.int32).tobytes())
    array = tensor_from_raw("x", "INT32", [2, 2], memoryview(buffer))
    buffer[0] = 9
    assert array[0, 0] == 9


def test_raw_tensor_from_bytes_is_read_only() -> None:
    array = tensor_from_raw("x", "FP32", [1], np.float32(1.5).tobytes())
    assert array.tolist() == [1.5]
    assert not array.flags.writeable


def test_raw_tensor_reads_little_endian() -> None:
    array = tensor_from_raw("x", "UINT16", [2], b"\x01\x00\x00\x01")
    assert array.tolist() == [1, 256]


def test_tensor_to_raw_writes_little_endian_c_order() -> None:
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)
    transposed = big_endian.T  # not C-contiguous
    raw = bytes(tensor_to_raw(transposed))
    assert raw == np.ascontiguousarray(transposed, dtype="<i4").tobytes()


def test_tensor_to_raw_shares_memory_of_contiguous_arrays() -> None:
    array = np.arange(4, dtype=np.float32)
    raw = tensor_to_raw(array)
    assert isinstance(raw, memoryview)
    assert len(raw) == 16
    array[0] = 5.0
    assert bytes(raw[:4]) == np.float32(5.0).tobytes()


def test_bytes_layout_matches_the_protocol_example() -> None:
    array = np.array([b"ab", b"xyz"], dtype=object)
    assert serialize_bytes_tensor(array) == bytes.fromhex("0200000061620300000078797a")


def test_bytes_serialization_matches_tritonclient() -> None:
    array = SAMPLES["BYTES"]
    assert serialize_bytes_tensor(array) == tritonclient.utils.serialize_byte_tensor(array).item()


def test_bytes_serialization_encodes_str_elements_as_utf8() -> None:
    array = np.array(["é", "a"])
    assert serialize_bytes_tensor(array) == b"\x02\x00\x00\x00\xc3\xa9\x01\x00\x00\x00a"


def test_deserialize_bytes_tensor_returns_flat_object_array() -> None:
    got = deserialize_bytes_tensor(b"\x02\x00\x00\x00ab\x00\x00\x00\x00", 2)
    assert got.dtype == object
    assert got.tolist() == [b"ab", b""]


def test_empty_bytes_tensor_has_no_bytes() -> None:
    assert serialize_bytes_tensor(np.array([], dtype=object)) == b""
    assert deserialize_bytes_tensor(b"", 0).shape == (0,)


@pytest.mark.parametrize(
    ("buf", "count", "message"),
    [
        pytest.param(b"\x02\x00", 1, "too short for 1 elements", id="short-prefix"),
        pytest.param(b"\x05\x00\x00\x00ab", 1, "element 0 declares 5 bytes", id="short-element"),
        pytest.param(
            b"\x04\x00\x00\x00abcd\x00\x00", 2, "element 1 has no length prefix", id="cut-prefix"
        ),
        pytest.param(b"\x01\x00\x00\x00ab", 1, "1 bytes after the declared 1", id="trailing"),
        pytest.param(b"\x00\x00\x00\x00" * 2, 1, "after the declared 1 elements", id="too-many"),
        pytest.param(b"", 10**18, "too short for", id="huge-count"),
    ],
)
def test_deserialize_bytes_tensor_rejects_malformed_data(
    buf: bytes, count: int, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        deserialize_bytes_tensor(buf, count)


def test_raw_size_mismatch_names_the_input_and_sizes() -> None:
    with pytest.raises(InvalidRequest) as caught:
        tensor_from_raw("x", "FP32", [2, 4], b"\x00" * 31)
    assert str(caught.value) == "input 'x': expected 32 bytes for FP32 [2, 4], got 31"


def test_raw_bytes_tensor_errors_name_the_input() -> None:
    with pytest.raises(InvalidRequest, match=r"^input 'text': BYTES data truncated"):
        tensor_from_raw("text", "BYTES", [1], b"\x09\x00\x00\x00abc")


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param([-1], id="negative"),
        pytest.param([2.0], id="float"),
        pytest.param(["2"], id="str"),
        pytest.param([True], id="bool"),
        pytest.param(3, id="not-a-list"),
        pytest.param(None, id="none"),
    ],
)
def test_bad_shapes_are_rejected(shape: Any) -> None:
    with pytest.raises(InvalidRequest, match="input 'x': shape must be a list of non-negative"):
        tensor_from_raw("x", "UINT8", shape, b"")
    with pytest.raises(InvalidRequest, match="input 'x': shape must be a list of non-negative"):
        tensor_from_list("x", "UINT8", shape, [])


def test_zero_sized_tensors_are_allowed() -> None:
    assert tensor_from_raw("x", "FP32", [0, 3], b"").shape == (0, 3)
    assert tensor_from_list("x", "FP32", [2, 0], []).shape == (2, 0)
    assert tensor_from_list("x", "BYTES", [0], []).dtype == object


def test_scalar_tensor_has_one_element() -> None:
    assert tensor_from_list("x", "INT64", [], [7]).shape == ()
    assert tensor_from_raw("x", "INT64", [], np.int64(7).tobytes()).item() == 7


def test_nested_json_data_is_accepted() -> None:
    got = tensor_from_list("x", "INT32", [2, 2], [[1, 2], [3, 4]])
    assert got.tolist() == [[1, 2], [3, 4]]


def test_fp16_accepts_json_numbers() -> None:
    got = tensor_from_list("x", "FP16", [3], [1, 0.5, -2.25])
    assert got.dtype == np.float16
    assert got.tolist() == [1.0, 0.5, -2.25]


def test_float_overflow_becomes_infinity_without_a_warning() -> None:
    assert tensor_from_list("x", "FP16", [1], [1e10]).tolist() == [float("inf")]


def test_bytes_json_data_accepts_str_and_bytes() -> None:
    got = tensor_from_list("x", "BYTES", [3], ["é", b"\xff", ""])
    assert got.tolist() == ["é".encode(), b"\xff", b""]


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        pytest.param("FP32", [2], [1.0, "2.0"], "FP32 data must be JSON numbers", id="str-in-fp32"),
        pytest.param("FP32", [2], [1.0, None], "FP32 data must be JSON numbers", id="null-in-fp32"),
        pytest.param("INT32", [2], [1, 2.5], "INT32 data must be JSON integers", id="float-in-int"),
        pytest.param("BOOL", [2], [1, 0], "BOOL data must be JSON booleans", id="int-in-bool"),
        pytest.param("BOOL", [2], [True, 0], "BOOL data must be JSON booleans", id="mixed-bool"),
        pytest.param("UINT64", [2], [-1, 2**64 - 1], "out of range", id="uint64-mixed-sign"),
        pytest.param("UINT64", [2], [1.5, 2**64 - 1], "must be JSON integers", id="uint64-float"),
        pytest.param("INT8", [1], [128], r"out of range \[-128, 127\]", id="int8-overflow"),
        pytest.param("UINT8", [1], [-1], r"out of range \[0, 255\]", id="negative-uint"),
        pytest.param("FP32", [2, 2], [1, 2, 3], "3 elements but shape", id="count-mismatch"),
        pytest.param("FP32", [2], [[1, 2], [3]], "ragged", id="ragged"),
        pytest.param("FP32", [1], 1.0, "data must be a list", id="not-a-list"),
        pytest.param("BYTES", [2], ["a", 1], "element 1 is int", id="int-in-bytes"),
        pytest.param("BYTES", [2], ["a", ["b"]], "element 1 is list", id="ragged-bytes"),
        pytest.param("BYTES", [3], ["a", "b"], r"2 elements but shape \[3\]", id="bytes-count"),
        pytest.param("fp32", [1], [1.0], "unknown datatype 'fp32'", id="lowercase-datatype"),
    ],
)
def test_bad_json_data_is_rejected(
    datatype: str, shape: list[int], data: Any, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as caught:
        tensor_from_list("x", datatype, shape, data)
    assert str(caught.value).startswith("input 'x': ")


def test_json_data_of_non_utf8_bytes_is_none() -> None:
    assert tensor_to_json_data(np.array([b"ok", b"\xff"], dtype=object)) is None


def test_non_native_byte_order_is_handled() -> None:
    big_endian = np.array([1.5, -2.0], dtype=">f4")
    assert bytes(tensor_to_raw(big_endian)) == np.array([1.5, -2.0], "<f4").tobytes()
    data = tensor_to_json_data(big_endian)
    assert orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY) == b"[1.5,-2.0]"


def test_json_data_is_flat() -> None:
    data = tensor_to_json_data(np.arange(6, dtype=np.int16).reshape(2, 3))
    assert orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY) == b"[0,1,2,3,4,5]"


def test_datatype_of_samples_matches_their_keys() -> None:
    assert {datatype_of(array) for array in SAMPLES.values()} == set(SAMPLES)
