"""The internal request and response types every transport converts to and from.

Tensors are numpy arrays. BYTES tensors are ``object`` arrays whose elements are ``bytes``.
Nothing here knows a wire format: the REST codec and (later) the gRPC converter translate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from infership.errors import InvalidRequest

Array = npt.NDArray[np.generic]
"""A tensor: any numpy array (``object`` dtype holding ``bytes`` for BYTES)."""

Parameter = str | int | float | bool
"""A protocol parameter value (request-, input- or output-level)."""

_NUMPY_OF: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_DATATYPE_OF: Final[dict[np.dtype[np.generic], str]] = {v: k for k, v in _NUMPY_OF.items()}

DATATYPES: Final[frozenset[str]] = frozenset(_NUMPY_OF)
"""Every Open Inference Protocol datatype name we accept (upper case, case-sensitive)."""


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype for an OIP datatype name; raises InvalidRequest for unknown names."""
    try:
        return _NUMPY_OF[datatype]
    except KeyError:
        known = ", ".join(sorted(_NUMPY_OF))
        raise InvalidRequest(f"unknown datatype {datatype!r}; expected one of {known}") from None


def datatype_of(array: Array) -> str:
    """The OIP datatype name of an array (``object`` and byte-string arrays are BYTES)."""
    dtype = array.dtype
    found = _DATATYPE_OF.get(dtype)  # native byte order: no new dtype to build
    if found is not None:
        return found
    if dtype.kind in ("S", "O", "U"):
        return "BYTES"
    try:
        return _DATATYPE_OF[dtype.newbyteorder("=")]
    except KeyError:
        raise InvalidRequest(f"numpy dtype {dtype} has no protocol datatype") from None


def element_size(datatype: str) -> int:
    """Bytes per element on the wire for fixed-size datatypes (BYTES is variable: 0)."""
    return 0 if datatype == "BYTES" else numpy_dtype(datatype).itemsize


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor in a model signature. ``-1`` in ``shape`` means any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        """True when ``shape`` has the same rank and matches every fixed dimension."""
        if len(shape) != len(self.shape):
            return False
        for want, got in zip(self.shape, shape, strict=True):  # a loop: once per input, per request
            if want >= 0 and want != got:
                return False
        return True


def check_input(spec: TensorSpec, array: Array, owner: str = "the model") -> int:
    """The rows of ``array`` (1 for a scalar), if its datatype and shape are ``spec``'s; else
    InvalidRequest naming the input and what ``owner`` expects."""
    datatype = datatype_of(array)
    if datatype != spec.datatype:
        raise InvalidRequest(f"input {spec.name!r} must be {spec.datatype}, got {datatype}")
    if not spec.accepts_shape(array.shape):
        raise InvalidRequest(
            f"input {spec.name!r} has shape {list(array.shape)}; {owner} expects "
            f"{list(spec.shape)} (-1 = any size)"
        )
    return int(array.shape[0]) if array.ndim else 1


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the client asked for, with its transport-level parameters (e.g. binary_data)."""

    name: str
    parameters: Mapping[str, Parameter] = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    """One inference call, transport-neutral.

    ``inputs`` maps tensor names to arrays whose shapes the client declared. ``outputs`` is
    None when the client asked for every output with default settings.
    """

    inputs: dict[str, Array]
    outputs: tuple[RequestedOutput, ...] | None = None
    id: str | None = None
    parameters: dict[str, Parameter] = field(default_factory=dict)
    input_parameters: dict[str, dict[str, Parameter]] = field(default_factory=dict)


@dataclass(slots=True)
class InferenceResponse:
    """The result of one inference call; outputs keep the order they should be sent in. The
    request id is echoed by the transport from the request, so it is not repeated here."""

    model_name: str
    model_version: str
    outputs: dict[str, Array]
    parameters: dict[str, Parameter] = field(default_factory=dict)
