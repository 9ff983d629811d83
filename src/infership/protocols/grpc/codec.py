"""``ModelInferRequest`` / ``ModelInferResponse`` ⇄ :mod:`infership.types`. Pure functions.

Inputs arrive as typed ``contents`` or as ``raw_input_contents``: raw entries belong, in order,
to the inputs that have no typed contents (kserve's client mixes both in one request). Outputs
always leave as ``raw_output_contents``, one per output, because tritonclient decodes nothing
else for numeric tensors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from infership.errors import InvalidRequest
from infership.parameters import timeout_us
from infership.protocols.grpc._pb import pb
from infership.tensors import (
    MAX_ELEMENTS,
    MAX_RANK,
    check_shape,
    tensor_from_raw,
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
    numpy_dtype,
)

# The typed field that carries each datatype. FP16 (and BF16) have none: raw only.
CONTENTS_FIELD: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_MICROSECONDS: Final = 1_000_000


def decode_infer_request(message: pb.ModelInferRequest) -> InferenceRequest:
    """The request a ``ModelInferRequest`` carries. Raises InvalidRequest naming the input.

    >>> m = pb.ModelInferRequest(raw_input_contents=[b"\\x07"])
    >>> _ = m.inputs.add(name="x", datatype="UINT8", shape=[1])
    >>> decode_infer_request(m).inputs["x"]
    array([7], dtype=uint8)
    """
    tensors = message.inputs
    if not tensors:
        raise InvalidRequest("inputs must hold at least one tensor")
    # Each attribute read of a protobuf message builds a Python object: read each field once.
    raw = message.raw_input_contents
    if raw:
        wants_raw = sum(not tensor.HasField("contents") for tensor in tensors)
        if len(raw) != wants_raw:
            raise InvalidRequest(
                f"raw_input_contents has {len(raw)} entries but {wants_raw} inputs have no typed"
                " contents; send one raw entry per such input, in input order"
            )
    inputs: dict[str, Array] = {}
    input_parameters: dict[str, dict[str, Parameter]] = {}
    next_raw = 0
    for tensor in tensors:
        name = tensor.name
        if name in inputs:
            raise InvalidRequest(f"duplicate input names: {name!r}")
        datatype = _datatype(name, tensor.datatype)
        if tensor.HasField("contents"):
            inputs[name] = _from_contents(name, datatype, tensor.shape, tensor.contents)
        elif raw:
            inputs[name] = tensor_from_raw(name, datatype, _dims(name, tensor.shape), raw[next_raw])
            next_raw += 1
        else:
            raise InvalidRequest(
                f"input {name!r} has no data; set its contents or send raw_input_contents"
            )
        parameters = tensor.parameters
        if parameters:
            input_parameters[name] = decode_parameters(parameters)
    outputs = message.outputs
    parameters = message.parameters
    return InferenceRequest(
        inputs=inputs,
        outputs=_requested_outputs(outputs) if outputs else None,
        id=message.id or None,
        parameters=decode_parameters(parameters) if parameters else {},
        input_parameters=input_parameters,
    )


def encode_infer_response(
    response: InferenceResponse, request: InferenceRequest
) -> pb.ModelInferResponse:
    """The ``ModelInferResponse`` for ``response``: every output raw, in order; the id echoed.

    >>> r = InferenceResponse("m", "1", {"y": np.array([1, 2], dtype=np.int16)})
    >>> encode_infer_response(r, InferenceRequest(inputs={})).raw_output_contents
    [b'\\x01\\x00\\x02\\x00']
    """
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=request.id or "",
    )
    for key, value in response.parameters.items():
        message.parameters[key].CopyFrom(encode_parameter(value))
    for name, array in response.outputs.items():
        message.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
        message.raw_output_contents.append(bytes(tensor_to_raw(array)))
    return message


def decode_parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Parameter]:
    """Plain values of a parameter map; an unset parameter is refused, naming its key."""
    decoded: dict[str, Parameter] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise InvalidRequest(f"parameter {key!r} has no value")
        value: Parameter = getattr(parameter, choice)
        decoded[key] = value
    return decoded


def encode_parameter(value: Parameter) -> pb.InferParameter:
    """The ``InferParameter`` for a plain value (bool is checked before int: it is one)."""
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    if isinstance(value, float):
        return pb.InferParameter(double_param=value)
    return pb.InferParameter(string_param=value)


def timeout_parameter(
    parameters: Mapping[str, Parameter], remaining_s: float | None
) -> int | float | None:
    """The request's ``timeout`` (microseconds, as in Triton) tightened to the gRPC deadline.

    None when the call has no deadline: the request's own timeout, if any, stands. A deadline
    that has already passed becomes 1 µs, so the request is refused with DeadlineExceeded
    instead of running without one. Raises InvalidRequest for a timeout REST refuses too (not
    a number, a bool, negative), and for NaN and infinity, which JSON cannot carry but
    ``double_param`` can: a deadline must not hide them.

    >>> timeout_parameter({"timeout": 5_000_000}, 0.25)
    250000
    """
    given = timeout_us(parameters)  # refuses what REST refuses, deadline or not
    if remaining_s is None:
        return None
    from_deadline = max(1, math.floor(remaining_s * _MICROSECONDS))
    if given and given < from_deadline:  # 0, as absent, means "no timeout of its own"
        return given
    return from_deadline


def _dims(name: str, shape: Any) -> tuple[int, ...]:
    """``shape`` (a repeated int64) checked as :func:`check_shape` checks it. Its elements are
    ints already, so a shape of positive dimensions needs only its rank and product checked;
    anything else (zeros, negatives) goes through ``check_shape`` for its exact refusal."""
    dims = tuple(shape)
    # Rank first: the product of at most MAX_RANK int64s is quick to make.
    if 0 < len(dims) <= MAX_RANK and min(dims) > 0 and math.prod(dims) <= MAX_ELEMENTS:
        return dims
    return check_shape(name, list(dims))


def _datatype(name: str, datatype: str) -> str:
    if datatype in DATATYPES:
        return datatype
    upper = datatype.upper()
    hint = f"; datatypes are upper case: {upper!r}" if upper in DATATYPES else ""
    known = ", ".join(sorted(DATATYPES))
    raise InvalidRequest(f"input {name!r}: datatype {datatype!r} is unknown{hint} (known: {known})")


def _from_contents(name: str, datatype: str, shape: Any, contents: pb.InferTensorContents) -> Array:
    dims = check_shape(name, list(shape))
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidRequest(
            f"input {name!r}: {datatype} has no typed contents field; send it in raw_input_contents"
        )
    used = [f.name for f, _ in contents.ListFields()]
    if used and used != [field]:
        raise InvalidRequest(
            f"input {name!r}: {datatype} data belongs in contents.{field},"
            f" got contents.{', contents.'.join(used)}"
        )
    values = getattr(contents, field)
    count = math.prod(dims)
    if len(values) != count:
        raise InvalidRequest(
            f"input {name!r}: contents.{field} has {len(values)} elements but shape"
            f" {list(dims)} needs {count}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(dims)
    dtype = numpy_dtype(datatype)
    # The wire field is wider than INT8/16 and UINT8/16: refuse values that would wrap.
    if dtype.kind in "iu" and dtype.itemsize < 4 and count:
        wide = np.asarray(values, dtype=np.int64)
        info = np.iinfo(dtype.name)
        if int(wide.min()) < info.min or int(wide.max()) > info.max:
            raise InvalidRequest(
                f"input {name!r}: {datatype} data out of range [{info.min}, {info.max}]"
            )
        return wide.astype(dtype).reshape(dims)
    return np.asarray(values, dtype=dtype).reshape(dims)


def _requested_outputs(
    outputs: Any,
) -> tuple[RequestedOutput, ...] | None:
    if not outputs:
        return None
    requested = tuple(
        RequestedOutput(
            o.name, decode_parameters(parameters) if (parameters := o.parameters) else {}
        )
        for o in outputs
    )
    names = [o.name for o in requested]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise InvalidRequest(f"duplicate output names: {', '.join(map(repr, duplicates))}")
    return requested
