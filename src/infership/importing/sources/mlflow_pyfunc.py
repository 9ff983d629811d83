"""An MLflow model served through ``mlflow.pyfunc``, as the ``model.py`` of ``runtime: python``.

``infership import`` copies this file, unchanged, into the version folder as ``model.py``, next
to a copy of the MLflow model directory, for MLflow models with no flavour that converts to a
graph (a ``PythonModel``, custom loaders). The same code computes the parity check's original
(mlflow's own ``predict`` on the directory the user gave), so what is compared is exactly what
is served. It needs only numpy, pandas (for column-based signatures) and mlflow.

``model.yaml``'s ``python.options`` say how requests map onto ``predict`` and back::

    model: mlflow_model                  # the copied MLflow model directory
    layout: columns                      # columns | tensor | tensors
    inputs:                              # one per signature column or tensor
      - {name: "sepal length (cm)", key: "sepal length (cm)", type: double}
    outputs:                             # how predict's result splits into outputs
      - {name: predictions, key: null, datatype: INT64}

- ``columns``: each input is one column of a pandas DataFrame (1-D, one value a row);
  BYTES inputs of MLflow type ``string`` are decoded as UTF-8.
- ``tensor``: the one input is passed as a numpy array.
- ``tensors``: the inputs are passed as a dict of numpy arrays, by ``key``.

An output with a ``key`` is that column of a DataFrame result, or that entry of a dict result;
one output without a key is the whole result (an array, a list, a Series, a one-column frame).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PREDICTIONS = "predictions"
"""The output's name when ``predict`` returns one unnamed result (MLflow's scoring server
answers ``{"predictions": ...}`` too)."""


class Model:
    """The ``runtime: python`` class: loads the copied MLflow model once per process."""

    def __init__(self, folder: Path, options: dict[str, Any]) -> None:
        self.adapter = Adapter(options)
        self.model = load(folder / options["model"])

    def predict(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.adapter.predict(self.model.predict, batch)


def load(folder: Path) -> Any:
    """``mlflow.pyfunc.load_model``, without the advice mlflow gives as warnings on import and
    load (add type hints, pickles are unsafe): the server's log is not where its reader is."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow.pyfunc  # type: ignore[import-untyped,unused-ignore]

        return mlflow.pyfunc.load_model(str(folder))


class Adapter:
    """Requests' tensors → ``predict``'s input, and its result → outputs by name."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.layout: str = options["layout"]
        self.inputs: list[dict[str, Any]] = list(options["inputs"])
        self.outputs: list[dict[str, Any]] = list(options["outputs"])

    def predict(self, predict: Any, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.split(predict(self.join(batch)))

    def join(self, batch: Mapping[str, np.ndarray]) -> Any:
        """The served inputs as ``predict`` takes them."""
        if self.layout == "columns":
            import pandas as pd  # type: ignore[import-untyped,unused-ignore]

            columns = {
                spec["key"]: _column(batch[spec["name"]], spec["type"]) for spec in self.inputs
            }
            return pd.DataFrame(columns)
        if self.layout == "tensor":
            return np.asarray(batch[self.inputs[0]["name"]])
        return {spec["key"]: np.asarray(batch[spec["name"]]) for spec in self.inputs}

    def split(self, result: Any) -> dict[str, np.ndarray]:
        """``predict``'s result as the declared outputs."""
        if len(self.outputs) == 1 and self.outputs[0]["key"] is None:
            only = self.outputs[0]
            return {only["name"]: _typed(_array(result), only["datatype"])}
        return {
            spec["name"]: _typed(_array(_part(result, spec["key"])), spec["datatype"])
            for spec in self.outputs
        }


def output_layout(result: Any) -> list[tuple[str, Any, np.ndarray]]:
    """(name, key, values) for each output of a result ``predict`` gave: a frame's columns or
    a dict's entries by name, anything else one output called ``predictions``."""
    if isinstance(result, Mapping):
        return [(str(key), key, _array(value)) for key, value in result.items()]
    columns = getattr(result, "columns", None)
    if columns is not None and all(isinstance(c, str) for c in columns) and len(columns) > 1:
        return [(c, c, _array(result[c])) for c in columns]
    return [(PREDICTIONS, None, _array(result))]


def _column(values: np.ndarray, kind: str) -> Any:
    if kind == "string":
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
    if kind == "binary":
        return [bytes(v) if not isinstance(v, str) else v.encode("utf-8") for v in values]
    return np.asarray(values)


def _part(result: Any, key: Any) -> Any:
    if isinstance(result, Mapping) or hasattr(result, "columns"):
        return result[key]
    raise TypeError(f"predict returned {type(result).__name__}, expected output {key!r} in it")


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "to_numpy"):  # a pandas Series or DataFrame
        value = value.to_numpy()
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = list(value)
    array = np.asarray(value)
    if array.dtype.kind == "U":
        array = array.astype(object)
    return array


_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def _typed(array: np.ndarray, datatype: str) -> np.ndarray:
    """The declared datatype, when ``predict`` gave a narrower one of the same kind (a model
    that answers int32 for one batch and int64 for another); anything else is returned as it
    is, for the server's signature check to report."""
    if datatype == "BYTES":
        return array if array.dtype == object else array.astype(object)
    wanted = np.dtype(_NUMPY[datatype])
    if array.dtype != wanted and np.can_cast(array.dtype, wanted, "same_kind"):
        return array.astype(wanted)
    return array
