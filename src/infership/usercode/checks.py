"""What the model's code returns, held to what it declared: a mismatch is the model's fault
(500), named precisely, never a wrong answer sent on."""

from __future__ import annotations

from collections.abc import Sequence

from infership.errors import InvalidRequest, ModelCodeFailed
from infership.types import Array, TensorSpec, datatype_of


def check_outputs(
    label: str, method: str, declared: Sequence[TensorSpec], outputs: dict[str, Array], rows: int
) -> dict[str, Array]:
    """``outputs`` if they are exactly the ``declared`` tensors, each with ``rows`` rows;
    else ModelCodeFailed naming the model, the method and the mismatch."""
    names = {spec.name for spec in declared}
    if outputs.keys() != names:
        missing = sorted(names - outputs.keys())
        extra = sorted(outputs.keys() - names)
        problem = f"without {missing}" if missing else f"with undeclared {extra}"
        raise ModelCodeFailed(f"{label}: {method} returned outputs {problem}")
    for spec in declared:
        array = outputs[spec.name]
        try:
            datatype = datatype_of(array)
        except InvalidRequest:
            datatype = str(array.dtype)
        if datatype != spec.datatype:
            raise ModelCodeFailed(
                f"{label}: {method} returned {datatype} for {spec.name!r}, declared {spec.datatype}"
            )
        if not spec.accepts_shape(array.shape):
            raise ModelCodeFailed(
                f"{label}: {method} returned shape {list(array.shape)} for {spec.name!r},"
                f" declared {list(spec.shape)}"
            )
        if array.ndim == 0 or array.shape[0] != rows:
            got = array.shape[0] if array.ndim else "no"
            raise ModelCodeFailed(
                f"{label}: {method} returned {got} rows of {spec.name!r} for a batch of {rows}"
            )
    return outputs
