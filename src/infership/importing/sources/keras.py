"""Keras 3 models, exported to ONNX with Keras' own ``Model.export(format="onnx")``.

Keras picks the converter by its backend: torch.onnx for ``torch`` (the TorchScript exporter,
which Keras uses for a dynamic batch axis), tf2onnx for ``tensorflow``, jax2onnx for ``jax``.
What is served (``runtime: onnx``, dynamic batch axis):

* inputs named as the model's ``keras.Input(name=...)``; unnamed ones ``input`` (``input_0``,
  ``input_1``, ... for several);
* outputs named after the layer that computes them when the user named it; otherwise
  ``probabilities`` for the one output a softmax computes, ``output`` (``output_0``, ...) for
  the rest;
* a softmax output is a classifier's: ``postprocess.classification`` with softmax off, and the
  parity check compares its top-1 class as well as its values; with ``labels``, an output of
  that many columns that is not a softmax is taken as logits (softmax on).

A layer the converter refuses (an op with no ONNX equivalent, usually in a custom layer) is
named in the ImportFailed, with its class. Saved models: ``.keras`` files (and legacy ``.h5``)
load with ``keras.saving.load_model`` in safe mode, which refuses ``Lambda`` layers' Python code
unless the caller trusts the file (``safe_mode=false``).
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np

from infership.errors import ImportFailed
from infership.importing.source import Exported, ImportOptions, Source, example_arrays, require
from infership.importing.sources.onnx_graph import (
    RESERVED,
    check_graph,
    converter_errors,
    describe,
    never_read,
    rename_io,
    softmax_outputs,
    unconverted_ops,
)
from infership.types import Array

SUFFIXES = (".keras", ".h5", ".hdf5")
PROBABILITIES = "probabilities"
AUTO_INPUT = re.compile(r"(keras_tensor|input_layer|input)(_\d+)?")
"""Names Keras gives inputs nobody named."""


class KerasSource(Source):
    name = "keras"
    extra = "keras"

    def accepts(self, model: object) -> bool:
        return any(
            c.__module__.split(".")[0] in ("keras", "tf_keras") and c.__name__ == "Model"
            for c in type(model).__mro__
        )

    def accepts_path(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in SUFFIXES

    def load(self, path: Path, options: ImportOptions) -> object:
        return load_keras(path, options.settings)

    def export(self, model: object, options: ImportOptions, version_dir: Path) -> Exported:
        return export_keras(model, options, version_dir)


# --- loading ----------------------------------------------------------------------------------


def load_keras(path: Path, settings: Mapping[str, Any]) -> object:
    """A ``.keras`` (or legacy ``.h5``) file, in Keras' safe mode unless ``safe_mode=false``."""
    _pick_backend()
    keras = require("keras", "keras")
    safe = not _no(settings.get("safe_mode"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns about optimizer state it skips
            return keras.saving.load_model(path, compile=False, safe_mode=safe)
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError for bad files
        raise ImportFailed(f"{path}: {_load_refusal(exc)}") from exc


def _load_refusal(exc: Exception) -> str:
    text = str(exc)
    if "Lambda" in text and "safe_mode" in text:
        return (
            "holds a Lambda layer, whose Python code runs when the file is loaded, so Keras' "
            "safe mode refuses it: if you trust the file, --set safe_mode=false "
            "(settings={'safe_mode': False})"
        )
    custom = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if custom:
        return (
            f"holds {custom.group(1)!r}, a custom class Keras does not know here: import the "
            "model from Python, where the class is defined and registered "
            "(@keras.saving.register_keras_serializable), with infership.save_model(model, ...)"
        )
    return f"Keras could not load it: {_first_line(exc)}"


def _pick_backend() -> None:
    """Keras defaults to the TensorFlow backend; where TensorFlow is missing and torch is there
    (as in infership's own environment), load with torch rather than fail. An explicit
    ``KERAS_BACKEND`` or an already imported Keras is left alone."""
    if "KERAS_BACKEND" in os.environ or "keras" in sys.modules:
        return
    if importlib.util.find_spec("tensorflow") is None and importlib.util.find_spec("torch"):
        os.environ["KERAS_BACKEND"] = "torch"


def _no(value: object) -> bool:
    if isinstance(value, str):  # --set safe_mode=false arrives as text
        return value.strip().lower() in {"0", "false", "no", "off"}
    return value is False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- export -----------------------------------------------------------------------------------


def export_keras(model: Any, options: ImportOptions, version_dir: Path) -> Exported:
    """Export a Keras 3 model into ``version_dir/model.onnx`` and describe it."""
    keras = require("keras", "keras")
    if not isinstance(model, keras.Model):
        raise ImportFailed(
            f"{type(model).__module__}.{type(model).__name__} is not a Keras 3 model (Keras 2 "
            "or tf_keras?): save it as a SavedModel with model.export(folder) and import the "
            "folder (--from tensorflow)"
        )
    backend = keras.backend.backend()
    given = example_arrays(options, "input")
    _build(model, given)
    onnx = require("onnx", "keras")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        logged = _export(model, path, options.opset, backend)
        graph = onnx.load(str(path))
    unconverted = unconverted_ops(graph)
    if unconverted:
        node, op = unconverted[0]
        layer = _layer_in(model, node)
        said = f"op {op!r} (node {node!r}) has no ONNX equivalent in tf2onnx"
        raise ImportFailed(_refusal(layer, said) if layer else f"Keras model: {said}")
    check_graph(graph, _converter(backend), logged)
    inputs = _input_names(model, given)
    outputs = _output_names(model, [v.name for v in graph.graph.output], softmax_outputs(graph))
    exported_inputs = [v.name for v in graph.graph.input]
    if len(exported_inputs) < len(inputs):  # torch.onnx drops an input nothing reads
        dropped = [n for n in inputs if n not in exported_inputs] or inputs
        raise ImportFailed(never_read(dropped[0], _converter(backend)))
    if len(exported_inputs) != len(inputs):
        raise ImportFailed(
            f"the exported graph has {len(exported_inputs)} inputs, the model {len(inputs)}"
        )
    rename_io(graph, dict(zip(exported_inputs, inputs, strict=True)), outputs)
    public_outputs = list(outputs.values())
    notes = [f"exported with Keras' own ONNX export ({_converter(backend)})"]
    return describe(
        graph,
        version_dir,
        options,
        _original(model, inputs, public_outputs),
        f"Keras {keras.__version__} {type(model).__name__} ({backend} backend)",
        notes,
    )


def _build(model: Any, given: Mapping[str, Array] | None) -> None:
    """Keras exports only a model that has run: run it once on the examples, or on a row of
    zeros where its inputs are declared (a loaded or never used functional model)."""
    if getattr(model, "_called", True):
        return
    if given is not None:
        feed = list(given.values())
    elif _has_inputs(model):
        feed = [np.zeros([d or 1 for d in t.shape], dtype=t.dtype) for t in model.inputs]
    else:
        raise ImportFailed(
            f"{type(model).__name__} has never been called, so its inputs are unknown: give "
            "example_inputs (or call the model once) before importing it"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.predict(feed[0] if len(feed) == 1 else feed, verbose=0)


def _has_inputs(model: Any) -> bool:
    try:
        return bool(model.inputs)
    except (AttributeError, ValueError):  # subclassed models have no symbolic inputs
        return False


def _export(model: Any, path: Path, opset: int | None, backend: str) -> list[str]:
    """Run Keras' exporter; returns the errors the converter logged without raising."""
    chatter = io.StringIO()  # torch.onnx prints the traced graph when an op fails
    with converter_errors("tf2onnx") as log, warnings.catch_warnings(), redirect_stdout(chatter):
        # torch.onnx warns about its TorchScript exporter and traced shapes on every export
        warnings.simplefilter("ignore")
        try:
            model.export(str(path), format="onnx", verbose=False, opset_version=opset)
        except ModuleNotFoundError as exc:
            raise ImportFailed(
                f"Keras' ONNX export with the {backend} backend needs {exc.name}: "
                f"pip install {exc.name}"
            ) from exc
        except Exception as exc:  # each backend's converter raises its own errors
            layer = _failing_layer(model, backend, opset)
            reason = _first_line(exc)
            if layer is not None:
                raise ImportFailed(_refusal(layer, reason)) from exc
            raise ImportFailed(f"Keras could not export the model to ONNX: {reason}") from exc
    return log.errors


def _converter(backend: str) -> str:
    return {"torch": "torch.onnx", "tensorflow": "tf2onnx", "jax": "jax2onnx"}.get(backend, backend)


def _refusal(layer: Any, reason: str) -> str:
    kind = type(layer)
    custom = kind.__module__.split(".")[0] != "keras"
    return (
        f"Keras layer {layer.name!r} ({kind.__name__}{', a custom layer' if custom else ''}) "
        f"cannot be exported to ONNX: {reason}; rewrite it with ops that have ONNX "
        "equivalents, or serve the model with runtime: python (docs/python-models.md)"
    )


# --- which layer failed -----------------------------------------------------------------------


def _leaf_layers(model: Any) -> Iterator[Any]:
    """Every layer, nested models' layers in their place."""
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):
            yield from _leaf_layers(layer)
        elif type(layer).__name__ != "InputLayer":
            yield layer


def _failing_layer(model: Any, backend: str, opset: int | None) -> Any:
    """The first layer that the torch exporter refuses on its own (None for other backends, or
    when every layer exports alone)."""
    if backend != "torch":
        return None
    for layer in _leaf_layers(model):
        if not _exports_alone(layer, opset):
            return layer
    return None


def _exports_alone(layer: Any, opset: int | None) -> bool:
    keras = require("keras", "keras")
    torch = require("torch", "torch")

    try:
        sample = keras.tree.map_structure(
            lambda t: torch.zeros([d or 1 for d in t.shape], dtype=getattr(torch, t.dtype)),
            layer.input,
        )
    except Exception:  # a layer used twice, or never called symbolically: cannot tell
        return True
    try:
        torch.onnx.export(layer, (sample,), io.BytesIO(), dynamo=False, opset_version=opset)
    except Exception:  # torch.onnx's UnsupportedOperatorError, and whatever tracing raises
        return False
    return True


def _layer_in(model: Any, node: str) -> Any:
    """The layer whose name scope holds the converted graph's ``node`` (tf2onnx keeps
    TensorFlow's scopes: ``functional_1/my_layer_1/Svd``)."""
    parts = node.split("/")
    found = None
    for layer in _leaf_layers(model):
        if any(re.fullmatch(rf"{re.escape(layer.name)}(_\d+)?", part) for part in parts):
            found = layer
    return found


# --- names ------------------------------------------------------------------------------------


def _input_names(model: Any, given: Mapping[str, Array] | None) -> list[str]:
    if _has_inputs(model):
        names = [t.name for t in model.inputs]
    elif given is not None:
        names = list(given)
    else:
        names = [""]
    if len(names) == 1:
        return [names[0] if names[0] and not AUTO_INPUT.fullmatch(names[0]) else "input"]
    return [
        name if name and not AUTO_INPUT.fullmatch(name) else f"input_{i}"
        for i, name in enumerate(names)
    ]


def _output_names(model: Any, exported: list[str], probabilities: set[str]) -> dict[str, str]:
    """Exported output name → public name (see the module's docstring)."""
    layers = _output_layers(model, len(exported))
    chosen: dict[str, str] = {}
    for i, (old, layer) in enumerate(zip(exported, layers, strict=True)):
        if layer is not None and _named_by_user(layer) and layer.name not in RESERVED:
            name = layer.name
        elif old in probabilities and len(probabilities) == 1:
            name = PROBABILITIES
        else:
            name = "output" if len(exported) == 1 else f"output_{i}"
        if name in chosen.values():
            name = f"{name}_{i}"
        chosen[old] = name
    return chosen


def _output_layers(model: Any, count: int) -> list[Any]:
    try:
        tensors = list(model.outputs)
    except (AttributeError, ValueError):
        tensors = []
    if len(tensors) != count:
        return [None] * count
    return [getattr(getattr(t, "_keras_history", None), "operation", None) for t in tensors]


def _named_by_user(layer: Any) -> bool:
    """Whether the layer's name is not one Keras made up from its class (``dense_3``)."""
    snake = re.sub(r"\W+", "", type(layer).__name__)
    snake = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", snake)
    snake = re.sub("([a-z])([A-Z])", r"\1_\2", snake).lower()
    return not re.fullmatch(rf"{re.escape(snake)}(_\d+)?", str(layer.name))


# --- the original -----------------------------------------------------------------------------


def _original(model: Any, inputs: list[str], outputs: list[str]) -> Any:
    """``model.predict`` on public inputs, its answers by public output name."""
    keras = require("keras", "keras")

    def original(feed: dict[str, Array]) -> dict[str, Array]:
        arrays = [feed[name] for name in inputs]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            answer = model.predict(arrays[0] if len(arrays) == 1 else arrays, verbose=0)
        flat = [np.asarray(a) for a in keras.tree.flatten(answer)]
        return dict(zip(outputs, flat, strict=True))

    return original
