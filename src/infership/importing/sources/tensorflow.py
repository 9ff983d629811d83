"""TensorFlow SavedModels (a folder with ``saved_model.pb`` and ``variables/``), converted to
ONNX with tf2onnx.

One signature is served, ``serving_default`` unless ``signature=NAME``: its inputs and outputs
keep the signature's names, as TensorFlow Serving clients know them; its first dimensions
stay free (the batch axis), and a signature with fixed ones is served one row at a time. An
output computed by a Softmax is a classifier's (``postprocess.classification``, softmax off);
given ``labels``, an output with that many columns otherwise holds logits (softmax on).

tf2onnx logs the ops it cannot convert instead of raising: they are found in the graph it
wrote, and the ImportFailed names each such op and its node. Loading a SavedModel runs none of
the Python that made it (a graph and its variables), so no consent is asked for. A live
``tf.Module`` whose ``__call__`` is a ``tf.function`` with an ``input_signature`` is saved into
a scratch SavedModel first.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infership.errors import ImportFailed
from infership.importing.source import Exported, ImportOptions, Source, require
from infership.importing.sources.onnx_graph import (
    check_graph,
    converter_errors,
    describe,
)
from infership.types import Array

SIGNATURE = "serving_default"
TAG = "serve"


@dataclass(frozen=True)
class SavedModelFolder:
    """A SavedModel on disk, as ``load`` hands it to ``export`` (TensorFlow reads it there)."""

    path: Path


class SavedModelSource(Source):
    name = "tensorflow"
    extra = "tensorflow"

    def accepts(self, model: object) -> bool:
        if isinstance(model, SavedModelFolder):
            return True
        return any(
            c.__module__.startswith("tensorflow.") and c.__name__ == "Module"
            for c in type(model).__mro__
        )

    def accepts_path(self, path: Path) -> bool:
        return is_saved_model(path)

    def load(self, path: Path, options: ImportOptions) -> object:
        if not is_saved_model(path):
            raise ImportFailed(f"{path}: not a SavedModel folder (no saved_model.pb)")
        return SavedModelFolder(path)

    def export(self, model: object, options: ImportOptions, version_dir: Path) -> Exported:
        if isinstance(model, SavedModelFolder):
            return export_saved_model(model.path, options, version_dir)
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch) / "saved_model"
            save_module(model, folder)
            return export_saved_model(folder, options, version_dir, live=model)


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")
    )


def save_module(module: Any, folder: Path) -> None:
    """Save a live ``tf.Module`` with its ``__call__`` as the serving signature."""
    tf = require("tensorflow", "tensorflow")
    call = module.__call__  # a tf.function's own attributes, not callable()
    if not getattr(call, "input_signature", None):
        raise ImportFailed(
            f"{type(module).__name__}.__call__ is not a tf.function with an input_signature, "
            "so its inputs are unknown: decorate it with "
            "@tf.function(input_signature=[tf.TensorSpec([None, ...], tf.float32, name=...)]) "
            "or save the module as a SavedModel with its signatures and import the folder"
        )
    tf.saved_model.save(module, str(folder), signatures={SIGNATURE: call})


def export_saved_model(
    folder: Path, options: ImportOptions, version_dir: Path, live: Any = None
) -> Exported:
    """Convert one signature of the SavedModel at ``folder`` into ``version_dir/model.onnx``."""
    tf = require("tensorflow", "tensorflow")
    name = str(options.settings.get("signature", SIGNATURE))
    tag = str(options.settings.get("tag", TAG))
    loaded = tf.saved_model.load(str(folder), tags=[tag])
    signatures = dict(loaded.signatures)
    if name not in signatures:
        raise ImportFailed(
            f"{folder}: no signature {name!r}; it has {sorted(signatures) or 'none'} "
            "(choose one with --set signature=NAME)"
        )
    function = signatures[name]
    graph, logged = _convert(folder, name, tag, options.opset)
    check_graph(graph, "tf2onnx", logged)
    _check_names(graph, function)
    tf2onnx = require("tf2onnx", "tensorflow")
    notes = [f"signature {name!r} converted with tf2onnx {tf2onnx.__version__}"]
    kind = type(live).__name__ if live is not None else "SavedModel"
    return describe(
        graph,
        version_dir,
        options,
        _original(function),
        f"TensorFlow {tf.__version__} {kind}",
        notes,
    )


def _convert(folder: Path, signature: str, tag: str, opset: int | None) -> tuple[Any, list[str]]:
    """tf2onnx's own path for ``python -m tf2onnx.convert --saved-model``: freeze the
    signature's graph, then convert it, its tensors renamed to the signature's names."""
    tf2onnx = require("tf2onnx", "tensorflow")
    with converter_errors("tf2onnx") as log, warnings.catch_warnings(), _quiet("tensorflow"):
        warnings.simplefilter("ignore")  # TensorFlow's deprecation notices for its v1 graph API
        try:
            graph_def, inputs, outputs, _tables, renamed = tf2onnx.tf_loader.from_saved_model(
                str(folder),
                None,
                None,
                [tag],
                [signature],
                return_initialized_tables=True,
                return_tensors_to_rename=True,
            )
            graph, _ = tf2onnx.convert.from_graph_def(
                graph_def,
                input_names=inputs,
                output_names=outputs,
                opset=opset,
                tensors_to_rename=renamed,
            )
        except Exception as exc:  # tf2onnx raises whatever its handlers raise
            text = str(exc).strip().splitlines()
            raise ImportFailed(
                f"tf2onnx could not convert signature {signature!r}: "
                f"{type(exc).__name__}: {text[0] if text else ''}"
            ) from exc
    return graph, log.errors


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """TensorFlow logs a deprecation notice for each v1 graph function tf2onnx calls."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(level)


def _check_names(graph: Any, function: Any) -> None:
    """The converted graph's inputs and outputs are the signature's (tf2onnx renames them)."""
    wanted_inputs = set(function.structured_input_signature[1])
    wanted_outputs = set(function.structured_outputs)
    got_inputs = {v.name for v in graph.graph.input}
    got_outputs = {v.name for v in graph.graph.output}
    if got_inputs != wanted_inputs or got_outputs != wanted_outputs:
        raise ImportFailed(
            f"tf2onnx named the graph's inputs {sorted(got_inputs)} and outputs "
            f"{sorted(got_outputs)}, the signature {sorted(wanted_inputs)} and "
            f"{sorted(wanted_outputs)}"
        )


def _original(function: Any) -> Any:
    """The signature run by TensorFlow, on public inputs, by output name."""
    tf = require("tensorflow", "tensorflow")
    specs = function.structured_input_signature[1]

    def original(feed: dict[str, Array]) -> dict[str, Array]:
        tensors = {name: tf.constant(feed[name], dtype=spec.dtype) for name, spec in specs.items()}
        answer = function(**tensors)
        return {name: np.asarray(value.numpy()) for name, value in answer.items()}

    return original
