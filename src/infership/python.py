"""What a model's own Python code imports from infership (``runtime: python`` and hooks).

A model version folder holds a module with one class; the class may define any of::

    from pathlib import Path
    import numpy as np
    from infership.python import InputError, Tensor

    class Model:
        inputs = [Tensor("x", "FP32", [-1, 4])]      # or model.yaml's ``inputs``
        outputs = [Tensor("y", "FP32", [-1, 3])]     # or model.yaml's ``outputs``

        def __init__(self, folder: Path, options: dict) -> None:  # once per process
            ...
        def preprocess(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            ...  # per request: the request's public inputs → the model's inputs
        def predict(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            ...  # per batch (runtime: python only): rows of several requests stacked
        def postprocess(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            ...  # per batch: the model's outputs → the public outputs
        def unload(self) -> None:
            ...

Each method may also be ``async def``. See docs/python-models.md for the whole contract.
"""

from __future__ import annotations

from collections.abc import Sequence

from infership.types import DATATYPES, TensorSpec

__all__ = ["InputError", "Tensor"]


class InputError(Exception):
    """Raise it when the request itself is wrong: the client gets 400 (INVALID_ARGUMENT over
    gRPC) with the message. Any other exception is the server's failure: 500, and the
    traceback goes only to the server's log."""


def Tensor(name: str, datatype: str, shape: Sequence[int]) -> TensorSpec:  # noqa: N802 - a type to its users
    """A tensor of the class's signature: an Open Inference Protocol datatype (``FP32``,
    ``INT64``, ``BYTES``, ...) and a shape with -1 for any size, the first axis the batch.

    >>> Tensor("y", "FP32", [-1, 3])
    TensorSpec(name='y', datatype='FP32', shape=(-1, 3))
    """
    if not name:
        raise ValueError("a tensor needs a name")
    if datatype not in DATATYPES:
        raise ValueError(f"datatype {datatype!r} is not one of {sorted(DATATYPES)}")
    dims = tuple(int(d) for d in shape)
    if any(d < -1 for d in dims):
        raise ValueError(f"tensor {name!r}: dimensions are sizes or -1, got {list(dims)}")
    return TensorSpec(name, datatype, dims)
