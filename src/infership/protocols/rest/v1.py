"""The TF Serving / KServe v1 REST protocol ⇄ :mod:`infership.types`. Pure functions.

A v1 predict body carries no datatypes and no shapes: tensors are nested JSON lists, and the
model's public signature (its metadata) says what each input is. So the caller hands the
signature in, and this module turns ``instances`` (one element per batch row) or ``inputs``
(one tensor per input) into an ``InferenceRequest``, and a response back into
``predictions`` or ``outputs``. Binary values travel as ``{"b64": "..."}``, the way TF Serving
clients send images. What a request may look like, and what each refusal says:
docs/v1-protocol.md.

    >>> x = TensorSpec("x", "FP32", (-1, 2))
    >>> decode_predict(b'{"instances": [[1, 2], [3, 4]]}', [x]).request.inputs["x"]
    array([[1., 2.],
           [3., 4.]], dtype=float32)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from typing import Any, Final, Literal, NamedTuple

import numpy as np
import orjson

from infership.errors import InvalidRequest, ModelNotFound, VersionNotFound
from infership.protocols.rest.codec import MAX_JSON_VALUES, check_value_count
from infership.tensors import MAX_RANK, tensor_from_list
from infership.types import Array, InferenceRequest, InferenceResponse, TensorSpec

Format = Literal["instances", "inputs"]
"""Row format (answered with ``predictions``) or columnar (answered with ``outputs``)."""

SIGNATURES: Final = ("serving_default", "")
"""``signature_name`` values accepted: a model here has one signature, TF Serving's default."""

_KEYS: Final = frozenset({"signature_name", "instances", "inputs"})
_NON_FINITE: Final = re.compile(rb"NaN|Infinity")
_TF_DTYPES: Final = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}
_TF_STATES: Final = {"READY": "AVAILABLE", "LOADING": "LOADING", "UNAVAILABLE": "END"}


class Prediction(NamedTuple):
    """A decoded predict body: the request, and the format its answer takes."""

    request: InferenceRequest
    format: Format


def signature(metadata: dict[str, Any]) -> list[TensorSpec]:
    """The public inputs of a model, from ``DataPlane.model_metadata``'s answer."""
    return [
        TensorSpec(spec["name"], spec["datatype"], tuple(spec["shape"]))
        for spec in metadata["inputs"]
    ]


# --- predict requests -----------------------------------------------------------------------


def decode_predict(body: bytes, inputs: Sequence[TensorSpec]) -> Prediction:
    """Parse a predict body against the model's public ``inputs``.

    JSON values become the declared datatype (integers must be JSON integers, BYTES strings or
    ``{"b64": ...}``); anything else, a ragged list, an unknown input name or a malformed body
    is an InvalidRequest naming it; a body with over MAX_JSON_VALUES values PayloadTooLarge.
    """
    doc = _load(body)
    if not isinstance(doc, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {_kind(doc)}")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        shown = ", ".join(repr(key[:40]) for key in unknown[:5])
        raise InvalidRequest(f"unknown key(s) {shown}; a predict body has {sorted(_KEYS)}")
    _check_signature(doc.get("signature_name"))
    instances, columns = doc.get("instances"), doc.get("inputs")
    if instances is not None and columns is not None:
        raise InvalidRequest("send either 'instances' (rows) or 'inputs' (columns), not both")
    specs = {spec.name: spec for spec in inputs}
    if instances is not None:
        return Prediction(InferenceRequest(inputs=_rows(instances, specs)), "instances")
    if columns is not None:
        return Prediction(InferenceRequest(inputs=_columns(columns, specs)), "inputs")
    raise InvalidRequest("the request body needs 'instances' (rows) or 'inputs' (columns)")


def _load(body: bytes) -> Any:
    if not body.strip():
        raise InvalidRequest('empty request body; expected {"instances": [...]} or {"inputs": ...}')
    if len(body) > MAX_JSON_VALUES:
        check_value_count(memoryview(body))
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    if _NON_FINITE.search(body):
        # TF Serving's JSON allows NaN, Infinity and -Infinity; orjson does not, Python's does.
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: [[[[... nested too deeply
            pass
    raise InvalidRequest(f"the request body is not valid JSON: {error}") from None


def _check_signature(name: Any) -> None:
    if name is None or name in SIGNATURES:
        return
    shown = repr(name[:60]) if isinstance(name, str) else _kind(name)  # never a deep dump
    raise InvalidRequest(
        f"unknown signature_name {shown}; models here have one signature, 'serving_default'"
    )


def _rows(instances: Any, specs: dict[str, TensorSpec]) -> dict[str, Array]:
    """``instances``: a list with one element per row, each the row's value of the only input
    or an object of every input's value."""
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest("'instances' must be a non-empty list, one element per row")
    if not _named(instances[0]):
        spec = _only_input(specs, "instances")
        return {spec.name: _tensor(spec, instances, "instances")}
    names = list(instances[0])
    _check_names(names, specs, "instances[0]")
    for i, row in enumerate(instances):
        if not _named(row) or row.keys() != instances[0].keys():
            raise InvalidRequest(
                f"instances[{i}] must be an object with the same inputs as instances[0]"
                f" ({', '.join(map(repr, names))})"
            )
    return {
        name: _tensor(specs[name], [row[name] for row in instances], "instances") for name in names
    }


def _columns(columns: Any, specs: dict[str, TensorSpec]) -> dict[str, Array]:
    """``inputs``: the only input's tensor, or an object of every input's tensor."""
    if not _named(columns):
        spec = _only_input(specs, "inputs")
        return {spec.name: _tensor(spec, columns, "inputs")}
    if not columns:
        raise InvalidRequest("'inputs' is an empty object; name the inputs it holds")
    _check_names(list(columns), specs, "inputs")
    return {name: _tensor(specs[name], value, "inputs") for name, value in columns.items()}


def _named(value: Any) -> bool:
    """Whether ``value`` is an object of named inputs (a ``{"b64": ...}`` is a value)."""
    return isinstance(value, dict) and not _is_b64(value)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _only_input(specs: dict[str, TensorSpec], key: str) -> TensorSpec:
    if len(specs) == 1:
        return next(iter(specs.values()))
    names = ", ".join(map(repr, specs))
    raise InvalidRequest(
        f"the model has {len(specs)} inputs ({names}): '{key}' must name them,"
        f" {_NAMED_EXAMPLE[key]}"
    )


_NAMED_EXAMPLE: Final = {
    "instances": 'one object per row: {"instances": [{"a": ..., "b": ...}, ...]}',
    "inputs": 'one object: {"inputs": {"a": [...], "b": [...]}}',
}


def _check_names(names: list[str], specs: dict[str, TensorSpec], where: str) -> None:
    for name in names:
        if name not in specs:
            raise InvalidRequest(
                f"{where}: the model has no input {name[:60]!r}; its inputs are {sorted(specs)}"
            )


def _tensor(spec: TensorSpec, value: Any, key: Format) -> Array:
    """``value`` (a nested list, or a scalar) as a tensor of ``spec``'s datatype; the shape is
    the nesting's. The model checks the shape against its own afterwards."""
    where = f"{key}: input {spec.name!r}"
    shape = _shape_of(value, where)
    data = value if isinstance(value, list) else [value]
    if spec.datatype == "BYTES":
        data = [v if type(v) is str else _bytes(v, where) for v in _leaves(data, shape, where)]
    elif any(_is_b64(leaf) for leaf in _first_leaves(data)):
        raise InvalidRequest(f"{where}: b64 values are for BYTES inputs; this is {spec.datatype}")
    try:
        return tensor_from_list(spec.name, spec.datatype, shape, data)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{key}: {exc.message}") from None


def _shape_of(value: Any, where: str) -> list[int]:
    """The shape a nested list has along its first elements (a ragged one fails later)."""
    dims: list[int] = []
    while isinstance(value, list):
        if len(dims) == MAX_RANK:
            raise InvalidRequest(f"{where}: nested over {MAX_RANK} levels deep")
        dims.append(len(value))
        if not value:
            break
        value = value[0]
    return dims


def _first_leaves(data: list[Any]) -> list[Any]:
    """The first few scalars of a nested list: enough to tell b64 objects from numbers."""
    while data and isinstance(data[0], list):
        data = data[0]
    return data[:1]


def _leaves(data: list[Any], shape: list[int], where: str) -> list[Any]:
    """The scalars of ``data`` in row-major order, if it is a regular nesting of ``shape``."""
    # Level by level: each level is the previous one's children, in order (so row-major),
    # in list comprehensions rather than a Python step per element.
    level: list[Any] = [data] if shape else data  # a scalar arrives as [value]
    for size in shape:
        if any(type(node) is not list or len(node) != size for node in level):
            raise InvalidRequest(
                f"{where}: ragged nesting (its first elements give the shape {shape})"
            )
        level = [child for node in level for child in node]
    if any(type(leaf) is list for leaf in level):
        raise InvalidRequest(f"{where}: ragged nesting (a list where a value should be)")
    return level


def _bytes(value: Any, where: str) -> bytes:
    """A BYTES value other than a string (which tensor_from_list encodes as UTF-8): b64."""
    if not _is_b64(value):
        raise InvalidRequest(
            f'{where}: BYTES values must be strings or {{"b64": "<base64>"}}, got {_kind(value)}'
        )
    text = value["b64"]
    if not isinstance(text, str):
        raise InvalidRequest(f"{where}: a b64 value must be a string, got {_kind(text)}")
    # Lenient where nothing is ambiguous: the URL-safe alphabet, padding left out, and the
    # line breaks of `base64` without -w0.
    text = text.replace("\n", "").replace("\r", "")
    altchars = b"-_" if "-" in text or "_" in text else None
    if "=" not in text:
        text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, altchars, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: a b64 value is not valid base64") from None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), "a number")


# --- predict responses ----------------------------------------------------------------------


def encode_predict(response: InferenceResponse, format: Format) -> bytes:
    """``{"predictions": ...}`` for rows, ``{"outputs": ...}`` for columns.

    One output goes unnamed, several as objects keyed by output name (per row for
    ``predictions``). BYTES outputs are strings when they are UTF-8 text, else
    ``{"b64": ...}`` (always for outputs named ``*_bytes``, as in TF Serving). Non-finite
    floats are written ``NaN``, ``Infinity`` and ``-Infinity`` as TF Serving writes them.
    Raises InvalidRequest when rows were asked for but the outputs do not share a first
    dimension."""
    outputs = {name: _jsonable(name, array) for name, array in response.outputs.items()}
    single = next(iter(outputs.values())) if len(outputs) == 1 else None
    if format == "inputs":
        doc: dict[str, Any] = {"outputs": outputs if single is None else single}
    elif single is not None:
        doc = {"predictions": single}
    else:
        rows = _rows_of(response.outputs)
        doc = {"predictions": [{name: v[i] for name, v in outputs.items()} for i in range(rows)]}
    finite = all(
        a.dtype.kind != "f" or bool(np.isfinite(a).all()) for a in response.outputs.values()
    )
    if finite:
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(doc, allow_nan=True, separators=(",", ":"), default=_tolist).encode()


def _jsonable(name: str, array: Array) -> Any:
    """What orjson writes as the nested JSON of ``array``: the array itself when it can."""
    if array.dtype.kind not in "OSU":
        if array.ndim == 0:
            return array.item()
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    items = [item if isinstance(item, bytes) else str(item).encode() for item in array.flat]
    texts: list[Any] | None = None
    if not name.endswith("_bytes"):
        try:
            texts = [item.decode() for item in items]
        except UnicodeDecodeError:
            texts = None
    if texts is None:
        texts = [{"b64": base64.b64encode(item).decode()} for item in items]
    nested = np.empty(len(texts), dtype=object)
    nested[:] = texts
    return nested.reshape(array.shape).tolist()


def _rows_of(outputs: dict[str, Array]) -> int:
    firsts = {int(array.shape[0]) if array.ndim else -1 for array in outputs.values()}
    if len(firsts) != 1 or -1 in firsts:
        raise InvalidRequest(
            "the model's outputs do not share a batch dimension, so they cannot be split into"
            " rows; send 'inputs' (columnar) instead of 'instances'"
        )
    return firsts.pop()


def _tolist(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


# --- status and metadata --------------------------------------------------------------------


def model_status(name: str, version: str | None, index: list[dict[str, Any]]) -> dict[str, Any]:
    """TF Serving's GetModelStatusResponse, plus KServe v1's ``name`` and ``ready``, from
    ``DataPlane.repository_index()``. Raises ModelNotFound or VersionNotFound."""
    entries = [entry for entry in index if entry["name"] == name]
    if not entries:
        raise ModelNotFound(f"unknown model {name!r}")
    if version is not None:
        # As the registry reads it: "01" is version 1.
        number = (version.lstrip("0") or "0") if version.isascii() and version.isdigit() else None
        entries = [entry for entry in entries if entry.get("version") == number]
        if not entries:
            shown = version if len(version) <= 20 else version[:20] + "..."
            raise VersionNotFound(f"model {name!r} has no version {shown!r}")
    statuses = [_version_status(entry) for entry in entries]
    return {
        "name": name,
        "ready": any(status["state"] == "AVAILABLE" for status in statuses),
        "model_version_status": statuses,
    }


def _version_status(entry: dict[str, Any]) -> dict[str, Any]:
    reason = entry.get("reason", "")
    failed = entry["state"] == "UNAVAILABLE" and reason not in ("", "unloaded", "not loaded")
    status: dict[str, Any] = {}
    if "version" in entry:  # proto3's JSON leaves out a version of 0: so do we
        status["version"] = entry["version"]
    status["state"] = _TF_STATES[entry["state"]]
    status["status"] = {
        "error_code": "UNKNOWN" if failed else "OK",
        "error_message": reason if failed else "",
    }
    return status


def model_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """TF Serving's GetModelMetadataResponse for ``DataPlane.model_metadata``'s answer: one
    signature, ``serving_default``, with TF datatype names and ``-1`` for any size."""
    served = max(metadata["versions"], key=int)  # one version when one was asked for
    signature_def = {
        "inputs": {spec["name"]: _tensor_info(spec) for spec in metadata["inputs"]},
        "outputs": {spec["name"]: _tensor_info(spec) for spec in metadata["outputs"]},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": metadata["name"], "signature_name": "", "version": served},
        "metadata": {
            "signature_def": {"signature_def": {"serving_default": signature_def}},
        },
    }


def _tensor_info(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "dtype": _TF_DTYPES[spec["datatype"]],
        "tensor_shape": {"dim": [{"size": str(size)} for size in spec["shape"]]},
        "name": spec["name"],
    }
