"""Stack requests into one batch along axis 0 and split a batch's outputs back. Pure numpy.

A request's inputs are already batched: every array's leading axis counts that request's rows
(n ≥ 1), and the arrays after axis 0 are what must match for requests to share a batch.
BYTES tensors (``object`` arrays of ``bytes``) stack and split like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import accumulate, pairwise
from typing import Any

import numpy as np

from infership.errors import InvalidRequest
from infership.types import Array

BatchKey = tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...]
"""(name, dtype, shape after axis 0) of every input, sorted by name."""


def count_rows(inputs: Mapping[str, Array]) -> int:
    """The rows of one request: the leading-axis length its inputs share.

    Raises InvalidRequest when there are no inputs, an input is a scalar, or the inputs disagree
    on (or have zero) rows.
    """
    if not inputs:
        raise InvalidRequest("the request has no inputs")
    rows = {name: int(array.shape[0]) if array.ndim else None for name, array in inputs.items()}
    scalars = [name for name, n in rows.items() if n is None]
    if scalars:
        raise InvalidRequest(
            f"inputs {scalars} are scalars; every input needs a leading batch axis"
        )
    counts = set(rows.values())
    if len(counts) > 1:
        raise InvalidRequest(f"inputs disagree on the batch axis (axis 0): {rows}")
    (count,) = counts
    if not count:
        raise InvalidRequest("the request has 0 rows; the batch axis (axis 0) must be at least 1")
    return count


def batch_key(inputs: Mapping[str, Array]) -> BatchKey:
    """What must match for requests to share a batch: names, dtypes and shapes after axis 0."""
    return tuple(
        sorted(
            ((name, array.dtype, array.shape[1:]) for name, array in inputs.items()),
            key=lambda item: item[0],
        )
    )


def stack(requests_inputs: Sequence[Mapping[str, Array]]) -> tuple[dict[str, Array], list[int]]:
    """Concatenate requests with the same batch_key along axis 0.

    Returns the batch and each request's row count, in order; pass the counts to ``split``.
    A single request is returned as is, without copying.
    """
    if not requests_inputs:
        raise ValueError("stack needs at least one request")
    counts = [count_rows(inputs) for inputs in requests_inputs]
    first = requests_inputs[0]
    if len(requests_inputs) == 1:
        return dict(first), counts
    if any(inputs.keys() != first.keys() for inputs in requests_inputs):
        raise ValueError("requests with different input names cannot share a batch")
    batch = {name: np.concatenate([inputs[name] for inputs in requests_inputs]) for name in first}
    return batch, counts


def split(outputs: Mapping[str, Array], counts: Sequence[int]) -> list[dict[str, Array]]:
    """Slice a batch's outputs back into one dict per request (views, not copies).

    Raises ValueError when an output is not an array whose leading axis has ``sum(counts)`` rows.
    """
    total = sum(counts)
    for name, array in outputs.items():
        if not isinstance(array, np.ndarray) or array.ndim == 0 or array.shape[0] != total:
            got = f"shape {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
            raise ValueError(
                f"output {name!r} has {got}; expected an array whose leading axis has "
                f"{total} rows, one per row of the batch"
            )
    if len(counts) == 1:  # a batch of one request: its outputs as they are
        return [dict(outputs)]
    bounds = pairwise([0, *accumulate(counts)])
    return [{name: array[start:stop] for name, array in outputs.items()} for start, stop in bounds]
