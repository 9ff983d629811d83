"""Wire-neutral tensor conversions shared by the REST codec and the gRPC converter.

Raw buffers are little-endian, row-major and unpadded; BYTES use the 4-byte length-prefixed
layout of OIP 2.4. Errors name the input so the client can find its mistake.

    >>> tensor_from_raw("x", "INT32", [2], b"\\x01\\x00\\x00\\x00\\x02\\x00\\x00\\x00")
    array([1, 2], dtype=int32)
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from infership.errors import InvalidRequest
from infership.types import DATATYPES, Array, numpy_dtype

_LENGTH: Final = struct.Struct("<I")

# numpy kinds a JSON list may infer to, per target kind: "b" bool, "i"/"u" int, "f" float.
_JSON_KINDS: Final[dict[str, str]] = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
_JSON_WORDS: Final[dict[str, str]] = {"b": "booleans", "i": "integers", "u": "integers"}


def serialize_bytes_tensor(array: Array) -> bytes:
    """Serialize a BYTES tensor: per element (row-major) a uint32 LE length, then the bytes.

    Elements that are not ``bytes`` are written as ``str(element)`` in UTF-8, as tritonclient
    does, so ``str`` and ``np.str_`` arrays serialize naturally.

    >>> serialize_bytes_tensor(np.array([b"ab", b"xyz"], dtype=object))
    b'\\x02\\x00\\x00\\x00ab\\x03\\x00\\x00\\x00xyz'
    """
    pack = _LENGTH.pack
    parts: list[bytes] = []
    for element in array.reshape(-1).tolist():
        data = element if isinstance(element, bytes) else str(element).encode()
        parts.append(pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes_tensor(buf: bytes | memoryview, count: int) -> Array:
    """Parse exactly ``count`` length-prefixed elements filling all of ``buf``.

    Returns a flat ``object`` array of ``bytes``. Raises InvalidRequest when the buffer ends
    inside an element, holds more than ``count`` elements, or has bytes left over.

    >>> deserialize_bytes_tensor(b"\\x02\\x00\\x00\\x00ab", 1)
    array([b'ab'], dtype=object)
    """
    view = memoryview(buf).cast("B")
    size = len(view)
    # Checked before the loop so a huge declared count cannot make us loop or allocate.
    if count * 4 > size:
        raise InvalidRequest(
            f"BYTES data of {size} bytes is too short for {count} elements"
            " (each needs a 4-byte length prefix)"
        )
    out = np.empty(count, dtype=object)
    unpack = _LENGTH.unpack_from
    offset = 0
    for index in range(count):
        if offset + 4 > size:
            raise InvalidRequest(f"BYTES data truncated: element {index} has no length prefix")
        (length,) = unpack(view, offset)
        offset += 4
        if offset + length > size:
            raise InvalidRequest(
                f"BYTES data truncated: element {index} declares {length} bytes,"
                f" only {size - offset} remain"
            )
        out[index] = view[offset : offset + length].tobytes()
        offset += length
    if offset != size:
        raise InvalidRequest(
            f"BYTES data holds {size - offset} bytes after the declared {count} elements"
        )
    return out


MAX_RANK = 32
"""Most dimensions a tensor may have (numpy's own limit is 64)."""

MAX_ELEMENTS = 1 << 32
"""Most elements a shape may describe, zero-length dimensions aside. No body or message within
the limits carries that many (each element needs at least one byte), so it refuses no real
tensor; it keeps an empty tensor such as ``[0, 2**63 - 1]``, which the data cannot bound, from
naming a shape numpy cannot hold."""


def check_shape(name: str, shape: object) -> tuple[int, ...]:
    """Return ``shape`` as a tuple, or raise InvalidRequest unless it is non-negative ints of
    at most :data:`MAX_RANK` dimensions describing at most :data:`MAX_ELEMENTS` elements.

    >>> check_shape("x", [2, 0, 3])
    (2, 0, 3)
    """
    if isinstance(shape, list | tuple) and len(shape) > MAX_RANK:
        raise InvalidRequest(
            f"input {name!r}: shape has {len(shape)} dimensions; at most {MAX_RANK}"
        )
    if not isinstance(shape, list | tuple) or not all(
        isinstance(dim, int | np.integer) and not isinstance(dim, bool) and dim >= 0
        for dim in shape
    ):
        raise InvalidRequest(
            f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}"
        )
    dims = tuple(int(dim) for dim in shape)
    extent = 1
    for dim in dims:
        extent *= dim or 1
        if extent > MAX_ELEMENTS:  # checked per step: a product of huge ints is slow to make
            raise InvalidRequest(
                f"input {name!r}: shape {list(dims)} has over {MAX_ELEMENTS} elements"
                " (zero dimensions aside)"
            )
    return dims


def tensor_from_raw(
    name: str, datatype: str, shape: Sequence[int], buf: bytes | memoryview
) -> Array:
    """Build a tensor from its raw little-endian bytes; a zero-copy, read-only view if possible.

    Raises InvalidRequest when the byte count does not match ``shape`` (or, for BYTES, the
    element count), the datatype is unknown, or the shape is not non-negative ints.

    >>> tensor_from_raw("x", "UINT8", [1, 2], b"\\x07\\x08")
    array([[7, 8]], dtype=uint8)
    """
    dims = check_shape(name, shape)
    count = math.prod(dims)
    if datatype == "BYTES":
        try:
            return deserialize_bytes_tensor(buf, count).reshape(dims)
        except InvalidRequest as exc:
            raise InvalidRequest(f"input {name!r}: {exc.message}") from None
    dtype = _LITTLE_ENDIAN.get(datatype) or _dtype(name, datatype).newbyteorder("<")
    expected = count * dtype.itemsize
    size = memoryview(buf).nbytes
    if size != expected:
        raise InvalidRequest(
            f"input {name!r}: expected {expected} bytes for {datatype} {list(dims)}, got {size}"
        )
    return np.frombuffer(buf, dtype=dtype).reshape(dims)


_WIRE_ORDERS: Final = "=<|" if sys.byteorder == "little" else "<|"
"""numpy byte orders already little-endian, as the wire wants (``|``: one byte, no order)."""


def tensor_to_raw(array: Array) -> bytes | memoryview:
    """The raw wire bytes of ``array``: C-order little-endian, or serialized BYTES.

    Returns a memoryview sharing the array's memory when it already has that layout.

    >>> bytes(tensor_to_raw(np.array([1, 2], dtype=np.int16)))
    b'\\x01\\x00\\x02\\x00'
    """
    if array.dtype.kind in "OSU":
        return serialize_bytes_tensor(array)
    if array.flags.c_contiguous and array.dtype.byteorder in _WIRE_ORDERS and array.size:
        return array.data.cast("B")  # already the wire layout: no new dtype, no copy
    contiguous = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return contiguous.reshape(-1).view(np.uint8).data


def tensor_from_list(
    name: str, datatype: str, shape: Sequence[int], data: Any, *, may_hold_bools: bool = True
) -> Array:
    """Build a tensor from JSON data, a flat or nested list in row-major order.

    BOOL must be JSON booleans, integer types JSON integers (in range), FP16/FP32/FP64 any JSON
    number, BYTES strings (UTF-8 encoded) or bytes. The element count must equal the product
    of ``shape``. Raises InvalidRequest naming the input otherwise. ``may_hold_bools`` False
    says the JSON text has no ``true`` or ``false`` (the caller knows), which skips looking for
    booleans among numbers: numpy infers ``[true, 2]`` as integers, so a boolean would
    otherwise pass for 1.

    >>> tensor_from_list("x", "FP32", [2, 2], [[1, 2], [3, 4.5]])
    array([[1. , 2. ],
           [3. , 4.5]], dtype=float32)
    """
    dims = check_shape(name, shape)
    if not isinstance(data, list):
        raise InvalidRequest(f"input {name!r}: data must be a list, got {type(data).__name__}")
    if datatype == "BYTES":
        flat = _bytes_from_list(name, data)
    else:
        flat = _numbers_from_list(name, datatype, data, may_hold_bools)
    return _shaped(name, flat, dims)


def _shaped(name: str, flat: Array, dims: tuple[int, ...]) -> Array:
    if flat.size != math.prod(dims):
        raise InvalidRequest(
            f"input {name!r}: data has {flat.size} elements but shape {list(dims)}"
            f" needs {math.prod(dims)}"
        )
    return flat.reshape(dims)


def tensor_to_json_data(array: Array) -> Any:
    """The flat JSON data of a tensor, or None when it can only travel as binary.

    Numeric tensors come back as a flat C-contiguous native-endian array, which
    ``orjson.dumps(..., option=OPT_SERIALIZE_NUMPY)`` writes directly (every OIP dtype,
    float16 and bool included, and float32 without float64 round-trip noise); None when it
    holds an infinity or NaN, which JSON cannot write. BYTES come back as a list of ``str``,
    or None if an element is not valid UTF-8.

    >>> tensor_to_json_data(np.array([b"hi", b"\\xff"], dtype=object)) is None
    True
    """
    if array.dtype.kind in "OSU":
        try:
            return [
                item.decode() if isinstance(item, bytes) else str(item)
                for item in array.reshape(-1).tolist()
            ]
        except UnicodeDecodeError:
            # JSON strings must be UTF-8; the binary layout carries any bytes, and both
            # tritonclient and kserve read a binary output even when they asked for JSON.
            return None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        # JSON has no infinity or NaN (orjson would write null, a wrong answer): binary does.
        return None
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("=")).reshape(-1)


_LITTLE_ENDIAN: dict[str, np.dtype[np.generic]] = {
    datatype: numpy_dtype(datatype).newbyteorder("<") for datatype in DATATYPES
}
"""The wire dtype of each fixed-size datatype, built once rather than per tensor."""


def _dtype(name: str, datatype: str) -> np.dtype[np.generic]:
    try:
        return numpy_dtype(datatype)
    except InvalidRequest as exc:
        raise InvalidRequest(f"input {name!r}: {exc.message}") from None


def _numbers_from_list(name: str, datatype: str, data: list[Any], may_hold_bools: bool) -> Array:
    target = _dtype(name, datatype)
    # Infer first instead of np.array(data, dtype=target): a target dtype would silently
    # parse "1.5" strings and wrap out-of-range integers.
    try:
        inferred = np.array(data)
    except (ValueError, TypeError):
        raise InvalidRequest(f"input {name!r}: data is ragged or holds non-numbers") from None
    # numpy infers [true, 2] as [1, 2]: a boolean among numbers is a client's mistake,
    # refused as a list of booleans alone is, not a 1 or a 0 computed with.
    numeric = target.kind != "b" and inferred.dtype.kind in "iuf" and inferred.size
    if may_hold_bools and numeric and _holds_bool(data):
        words = _JSON_WORDS.get(target.kind, "numbers")
        raise InvalidRequest(f"input {name!r}: {datatype} data must be JSON {words}")
    if inferred.dtype.kind == "f" and target.kind in "iu":
        # Ints on both sides of the int64 range (0 and 2**64 - 1) infer as float64;
        # keep them as Python ints so the range check stays exact.
        exact = _exact_integers(name, datatype, data)
        return _cast_numbers(name, datatype, target, exact, kinds="O")
    return _cast_numbers(name, datatype, target, inferred)


def _holds_bool(data: list[Any]) -> bool:
    """Whether a nested JSON list holds a boolean anywhere (numpy's inference hides them)."""
    stack = [data]
    while stack:
        for element in stack.pop():
            if type(element) is bool:
                return True
            if type(element) is list:
                stack.append(element)
    return False


def _cast_numbers(
    name: str, datatype: str, target: np.dtype[Any], numbers: Array, kinds: str | None = None
) -> Array:
    """Check JSON-parsed ``numbers`` against ``datatype`` (numpy kinds, integer range) and
    convert them; ``kinds`` overrides the kinds the target accepts."""
    kinds = kinds or _JSON_KINDS[target.kind]
    if numbers.size and numbers.dtype.kind not in kinds:
        words = _JSON_WORDS.get(target.kind, "numbers")
        raise InvalidRequest(f"input {name!r}: {datatype} data must be JSON {words}")
    if target.kind in "iu" and numbers.size:
        info = np.iinfo(target.name)
        if int(numbers.min()) < info.min or int(numbers.max()) > info.max:
            raise InvalidRequest(
                f"input {name!r}: {datatype} data out of range [{info.min}, {info.max}]"
            )
    # FP16/FP32 overflow to inf like an IEEE cast would; numpy would also warn.
    with np.errstate(over="ignore"):
        return numbers.astype(target, copy=False).reshape(-1)


def _exact_integers(name: str, datatype: str, data: list[Any]) -> Array:
    flat = np.array(data, dtype=object).reshape(-1).tolist()
    if not all(type(element) is int for element in flat):
        raise InvalidRequest(f"input {name!r}: {datatype} data must be JSON integers")
    return np.array(flat, dtype=object)


def _bytes_from_list(name: str, data: list[Any]) -> Array:
    try:
        nested = np.array(data, dtype=object)
    except ValueError:
        raise InvalidRequest(f"input {name!r}: data is ragged") from None
    flat = nested.reshape(-1)
    for index, element in enumerate(flat.tolist()):
        if isinstance(element, str):
            flat[index] = element.encode()
        elif not isinstance(element, bytes):
            raise InvalidRequest(
                f"input {name!r}: BYTES data must be strings, element {index}"
                f" is {type(element).__name__}"
            )
    return flat
