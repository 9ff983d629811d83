"""Open Inference Protocol v2 REST bodies ⇄ :mod:`infership.types`, including binary tensors.

Pure functions: bytes and header values in, types out, and back. The HTTP layer reads the
headers, calls these, and maps the raised :mod:`infership.errors` to status codes.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from typing import Any, Final, NamedTuple, TypeGuard

import orjson

from infership.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from infership.tensors import (
    tensor_from_list,
    tensor_from_raw,
    tensor_to_json_data,
    tensor_to_raw,
)
from infership.types import (
    DATATYPES,
    Array,
    InferenceRequest,
    InferenceResponse,
    Parameter,
    RequestedOutput,
    datatype_of,
)

HEADER_LENGTH: Final = "Inference-Header-Content-Length"
_ZLIB_WBITS: Final = 15
_GZIP_WBITS: Final = 31
_EMPTY: Final = "empty request body; expected a JSON inference request"


class _Input(NamedTuple):
    name: str
    datatype: str
    shape: list[int]
    data: Any  # the JSON list, or None when in the binary section
    binary_size: int | None
    parameters: dict[str, Parameter]


def decode_infer_request(
    body: bytes,
    *,
    header_length: str | None,
    content_encoding: str | None = None,
    max_body_bytes: int,
) -> InferenceRequest:
    """Parse an infer request body (JSON, optionally followed by binary tensors).

    ``header_length`` is the Inference-Header-Content-Length value, None when absent (then the
    whole body is JSON). ``content_encoding`` may be gzip, deflate or identity; the limit
    applies to the decompressed size. Raises InvalidRequest naming the offending field,
    PayloadTooLarge, or UnsupportedMediaType. Binary tensors are read-only views into the body.

    >>> body = b'{"inputs":[{"name":"x","shape":[2],"datatype":"INT32","data":[1,2]}]}'
    >>> decode_infer_request(body, header_length=None, max_body_bytes=1 << 20).inputs["x"]
    array([1, 2], dtype=int32)
    """
    data = _decompress(body, content_encoding, max_body_bytes)
    view = memoryview(data)
    json_length = _json_length(header_length, len(view))
    if json_length == 0:
        raise InvalidRequest(_EMPTY)
    header = _header(view[:json_length])
    # Only a text with a JSON boolean can have one among a tensor's numbers (tensor_from_list).
    bools = data.find(b"true", 0, json_length) >= 0 or data.find(b"false", 0, json_length) >= 0
    inputs = _build_inputs(header.inputs, view[json_length:], header_length is not None, bools)
    return InferenceRequest(
        inputs=inputs,
        outputs=header.outputs,
        id=header.id,
        parameters=dict(header.parameters),
        input_parameters={
            spec.name: dict(spec.parameters) for spec in header.inputs if spec.parameters
        },
    )


class _Header(NamedTuple):
    """What a request's JSON says, before its tensors are built."""

    inputs: list[_Input]
    outputs: tuple[RequestedOutput, ...] | None
    id: str | None
    parameters: dict[str, Parameter]


_SEEN_HEADERS: dict[bytes, _Header] = {}
"""Binary requests' JSON, parsed: a client sends the same few bytes with every tensor (names,
shapes, sizes), and parsing and checking them again cost more than the rest of decoding."""
_SEEN_HEADERS_MAX = 256
_SEEN_HEADER_BYTES = 2048


def _header(text: memoryview) -> _Header:
    key = bytes(text) if len(text) <= _SEEN_HEADER_BYTES else None
    header = None if key is None else _SEEN_HEADERS.get(key)
    if header is not None:
        return header
    header = _parse_header(text)
    # Only headers whose tensors are all binary: JSON data is a new value every time.
    if key is not None and all(spec.binary_size is not None for spec in header.inputs):
        if len(_SEEN_HEADERS) >= _SEEN_HEADERS_MAX:
            _SEEN_HEADERS.clear()  # many clients or shapes: start again, bounded
        _SEEN_HEADERS[key] = header
    return header


def _parse_header(text: memoryview) -> _Header:
    doc = _load_json(text)
    if not isinstance(doc, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {_json_type(doc)}")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidRequest("inputs must be a non-empty list of tensor objects")
    specs = [_parse_input(f"inputs[{i}]", item) for i, item in enumerate(raw_inputs)]
    _check_unique([spec.name for spec in specs], "input")
    outputs = _parse_outputs(doc.get("outputs"))
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest(f"id must be a string, got {_json_type(request_id)}")
    return _Header(specs, outputs, request_id, _parameters(doc.get("parameters"), "parameters"))


def encode_infer_response(
    response: InferenceResponse, request: InferenceRequest
) -> tuple[bytes, dict[str, str]]:
    """Serialize a response, as binary tensors where the request asked for them.

    An output is binary when its requested output has ``binary_data`` true, or it has no
    ``binary_data`` and the request's ``binary_data_output`` is true. Returns the body and the
    headers to add (Content-Type, and Inference-Header-Content-Length when binary follows).

    >>> import numpy as np
    >>> resp = InferenceResponse("m", "1", {"y": np.array([1.5], dtype=np.float32)})
    >>> body, headers = encode_infer_response(resp, InferenceRequest(inputs={}))
    >>> orjson.loads(body)["outputs"]
    [{'name': 'y', 'datatype': 'FP32', 'shape': [1], 'data': [1.5]}]
    """
    requested = {output.name: output.parameters for output in request.outputs or ()}
    default_binary = _flag(request.parameters.get("binary_data_output", False))
    entries: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, array in response.outputs.items():
        params = requested.get(name, {})
        binary = _flag(params["binary_data"]) if "binary_data" in params else default_binary
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        data = None if binary else tensor_to_json_data(array)
        if data is None:
            blob = tensor_to_raw(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = data
        entries.append(entry)

    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if request.id is not None:
        doc["id"] = request.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return b"".join([header, *blobs]), headers


def encode_json(obj: Any) -> bytes:
    """Serialize a JSON document (metadata, errors, ...); numpy arrays and scalars allowed.

    >>> encode_json({"live": True})
    b'{"live":true}'
    """
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def compress_body(
    body: bytes, accept_encoding: str | None, *, level: int = 1
) -> tuple[bytes, str | None]:
    """Compress ``body`` if the client's Accept-Encoding names gzip (preferred) or deflate.

    Returns the body to send and the Content-Encoding to set (None: send as is). ``br`` and
    ``*`` are never chosen: tritonclient decodes only gzip and deflate. Level 1 because
    tensors compress poorly and higher levels cost several times the CPU for a few percent.

    >>> compress_body(b"{}", "br")
    (b'{}', None)
    """
    if not accept_encoding:
        return body, None
    if _quality(accept_encoding, "gzip") > 0:
        return gzip.compress(body, compresslevel=level, mtime=0), "gzip"
    if _quality(accept_encoding, "deflate") > 0:
        return zlib.compress(body, level), "deflate"
    return body, None


# --- request body ---------------------------------------------------------------------------


def is_identity(content_encoding: str | None) -> bool:
    """Whether a Content-Encoding value leaves the body as it is (absent, empty, identity).

    >>> is_identity(" Identity "), is_identity("gzip")
    (True, False)
    """
    return content_encoding is None or content_encoding.strip().lower() in ("identity", "")


def _decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    coding = (content_encoding or "identity").strip().lower()
    if is_identity(coding):
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {limit}")
        return body
    if coding in ("gzip", "x-gzip"):
        wbits = _GZIP_WBITS
    elif coding == "deflate":
        # "deflate" means a zlib stream (RFC 9110), but some clients send raw deflate.
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0
        wbits = _ZLIB_WBITS if zlib_header else -_ZLIB_WBITS
    else:
        raise UnsupportedMediaType(
            f"Content-Encoding {content_encoding!r} is not supported; use gzip, deflate or identity"
        )
    try:
        return _inflate(body, wbits, limit)
    except zlib.error as exc:
        raise InvalidRequest(f"request body is not valid {coding} data: {exc}") from None


_MAX_GZIP_MEMBERS = 16


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        if len(chunks) >= _MAX_GZIP_MEMBERS:  # each member re-slices the rest: keep it linear
            raise InvalidRequest(f"compressed body has over {_MAX_GZIP_MEMBERS} gzip members")
        # max_length stops a small zip bomb from expanding past the limit in memory.
        inflater = zlib.decompressobj(wbits)
        chunk = inflater.decompress(data, limit - total + 1)
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"decompressed request body is over the limit of {limit} bytes")
        if not inflater.eof:
            raise InvalidRequest("compressed request body is truncated")
        chunks.append(chunk)
        data = inflater.unused_data
        if not data:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if wbits != _GZIP_WBITS:  # only gzip allows several members back to back
            raise InvalidRequest(f"{len(data)} unexpected bytes after the compressed body")


MAX_JSON_VALUES = 1 << 22
"""Most values (numbers, strings, ...) a JSON request may hold: 4,194,304, a 16 MB FP32
tensor. Parsed, each becomes a Python object (8 to 32 bytes more than its text), so this bounds
the parser's memory at about 130 MB whatever the body limit; larger tensors travel as binary."""


def _load_json(text: memoryview) -> Any:
    # orjson (Rust, bounds-checked) parses every JSON body. pysimdjson, which parsed large
    # ones straight into numpy, wrote past its buffer for arrays of 2**24 elements or more and
    # aborted the process (issue 16, F1): no parser that can corrupt memory on some input
    # within the body limit belongs on the request path.
    if len(text) > MAX_JSON_VALUES:
        check_value_count(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None


def check_value_count(text: memoryview) -> None:
    """Refuse (413) a document that may hold more than MAX_JSON_VALUES values, before parsing.

    Every value but the first of an array or object follows a comma, so commas plus opening
    brackets bound the count from above (commas inside strings count too: the bound errs on
    the side of refusing, and only for bodies over MAX_JSON_VALUES bytes)."""
    data = text.obj if isinstance(text.obj, bytes) and text.nbytes == len(text.obj) else bytes(text)
    values = data.count(b",") + data.count(b"[") + data.count(b"{")
    if values > MAX_JSON_VALUES:
        raise PayloadTooLarge(
            f"JSON request body holds up to {values} values; the limit is {MAX_JSON_VALUES}."
            f" Send large tensors as binary data ({HEADER_LENGTH})"
        )


def _json_length(header: str | None, body_length: int) -> int:
    if header is None:
        return body_length
    text = header.strip()
    if not (text.isascii() and text.isdigit()):
        raise InvalidRequest(f"{HEADER_LENGTH} must be a non-negative integer, got {header!r}")
    # Longer than any body we accept; also keeps int() away from its digit limit.
    length = int(text) if len(text) <= 19 else body_length + 1
    if length > body_length:
        raise InvalidRequest(
            f"{HEADER_LENGTH} is {text} but the (decompressed) body has only {body_length} bytes"
        )
    return length


def _parse_input(where: str, item: Any) -> _Input:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where} must be an object, got {_json_type(item)}")
    name = _required_str(item, "name", where)
    datatype = _required_str(item, "datatype", where)
    if datatype not in DATATYPES:
        hint = (
            f"; datatypes are upper case: {datatype.upper()!r}"
            if datatype.upper() in DATATYPES
            else ""
        )
        known = ", ".join(sorted(DATATYPES))
        raise InvalidRequest(f"{where}.datatype {datatype!r} is unknown{hint} (known: {known})")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
        raise InvalidRequest(f"{where}.shape must be a list of non-negative integers")
    parameters = _parameters(item.get("parameters"), f"{where}.parameters")
    size = parameters.pop("binary_data_size", None)
    data = item.get("data")  # kserve sends "data": null next to binary_data_size 0
    if size is None:
        if data is None:
            raise InvalidRequest(f"{where} needs data or parameters.binary_data_size")
        return _Input(name, datatype, shape, data, None, parameters)
    if not _is_count(size):
        raise InvalidRequest(f"{where}.parameters.binary_data_size must be a non-negative integer")
    if data is not None:
        raise InvalidRequest(f"{where} has both data and parameters.binary_data_size")
    return _Input(name, datatype, shape, None, size, parameters)


def _build_inputs(
    specs: list[_Input], tail: memoryview, has_header: bool, may_hold_bools: bool = True
) -> dict[str, Array]:
    declared = sum(spec.binary_size or 0 for spec in specs)
    if declared > len(tail):
        hint = "" if has_header else f" (binary data needs the {HEADER_LENGTH} header)"
        raise InvalidRequest(
            f"truncated binary data: inputs declare {declared} bytes after the JSON,"
            f" the body has {len(tail)}{hint}"
        )
    if declared < len(tail):
        raise InvalidRequest(
            f"{len(tail) - declared} unexpected trailing bytes after the binary data"
            f" ({declared} bytes declared by the inputs)"
        )
    inputs: dict[str, Array] = {}
    offset = 0
    for spec in specs:
        if spec.binary_size is None:
            inputs[spec.name] = tensor_from_list(
                spec.name, spec.datatype, spec.shape, spec.data, may_hold_bools=may_hold_bools
            )
        else:
            blob = tail[offset : offset + spec.binary_size]
            offset += spec.binary_size
            inputs[spec.name] = tensor_from_raw(spec.name, spec.datatype, spec.shape, blob)
    return inputs


def _parse_outputs(raw: Any) -> tuple[RequestedOutput, ...] | None:
    # An empty list asks for nothing in particular, like an absent one: every output.
    if raw is None or raw == []:
        return None
    if not isinstance(raw, list):
        raise InvalidRequest(f"outputs must be a list, got {_json_type(raw)}")
    outputs = []
    for i, item in enumerate(raw):
        where = f"outputs[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object, got {_json_type(item)}")
        name = _required_str(item, "name", where)
        outputs.append(
            RequestedOutput(name, _parameters(item.get("parameters"), f"{where}.parameters"))
        )
    _check_unique([output.name for output in outputs], "output")
    return tuple(outputs)


def _parameters(raw: Any, where: str) -> dict[str, Parameter]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object, got {_json_type(raw)}")
    for key, value in raw.items():
        if not isinstance(value, str | int | float):  # bool is an int
            raise InvalidRequest(
                f"{where}.{key} must be a string, number or boolean, got {_json_type(value)}"
            )
    return dict(raw)


def _required_str(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if value is None:
        raise InvalidRequest(f"{where}.{key} is required")
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}.{key} must be a string, got {_json_type(value)}")
    return value


def _check_unique(names: list[str], kind: str) -> None:
    if len(set(names)) != len(names):
        duplicates = sorted(name for name, n in Counter(names).items() if n > 1)[:10]
        raise InvalidRequest(f"duplicate {kind} names: {', '.join(map(repr, duplicates))}")


def _is_count(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _flag(value: Parameter | None) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _quality(accept_encoding: str, coding: str) -> float:
    """The q-value Accept-Encoding gives ``coding``; 0 when absent or unparsable."""
    for item in accept_encoding.lower().split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if name == coding:
            value = next((param[2:] for param in params if param.startswith("q=")), "1")
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 0.0
