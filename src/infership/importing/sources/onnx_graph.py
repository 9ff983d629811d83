"""What the Keras and TensorFlow importers do to the ONNX graph their converter wrote, and how
they describe it: public input and output names, the batch axis, converter failures that the
converters only log, and classifiers found by the Softmax that ends an output.

The converters (torch.onnx through ``keras.Model.export``, tf2onnx) name the graph's values
after their own tensors (``23``, ``Identity:0``, ``keras_tensor``); the served names are
chosen by the importer and given to the graph here with Identity nodes, which touch nothing
already in the graph and which onnxruntime removes when it optimises the graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from infership.errors import ImportFailed, ModelLoadError
from infership.importing.source import (
    Check,
    Exported,
    ImportOptions,
    batching,
    example_arrays,
    require,
    sample_inputs,
)
from infership.repository.manifest import OnnxOptions
from infership.runtimes.onnx import OnnxRuntime
from infership.types import Array, TensorSpec, numpy_dtype

ARTIFACT = "model.onnx"
BATCH = "batch"
RESERVED = frozenset({"label", "probability", "class_index"})
"""Outputs ``postprocess.classification`` adds: no model output may take these names."""
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def rename_io(model: Any, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> None:
    """Give the graph's inputs and outputs their public names (old → new).

    An input becomes a new graph input feeding the old name through Identity, an output an
    Identity of the old value: the converter's own value names stay where they are, in
    subgraphs too, and a public name may equal a value an output reads."""
    helper = require("onnx.helper", "keras")
    graph = model.graph
    taken = _value_names(graph)
    for old, new in {**inputs, **outputs}.items():
        if new != old and new in taken:
            raise ImportFailed(f"the exported graph already has a value named {new!r}")
    for position, value in enumerate(list(graph.input)):
        new = inputs.get(value.name, value.name)
        if new == value.name:
            continue
        renamed = type(value)()
        renamed.CopyFrom(value)
        renamed.name = new
        graph.input.remove(value)
        graph.input.insert(position, renamed)
        graph.node.insert(0, helper.make_node("Identity", [new], [value.name], name=f"in_{new}"))
    for value in graph.output:
        new = outputs.get(value.name, value.name)
        if new != value.name:
            graph.node.append(helper.make_node("Identity", [value.name], [new], name=f"out_{new}"))
            value.name = new


def _value_names(graph: Any) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output, *graph.initializer)}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def free_batch_axis(model: Any) -> list[str]:
    """Name the first dimension of every input ``batch`` where it is free; the inputs whose first
    dimension is fixed (or which have none) are returned: such a graph cannot batch."""
    fixed = []
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            fixed.append(value.name)
        else:
            dims[0].dim_param = BATCH
    return fixed


def unread_inputs(model: Any) -> list[str]:
    """Graph inputs no node reads: the converter recorded the model's answer as a constant
    (computed in numpy or Python, outside the framework's ops)."""
    read: set[str] = {o.name for o in model.graph.output}
    for node in _all_nodes(model.graph):
        read.update(node.input)
    return [v.name for v in model.graph.input if v.name not in read]


def unconverted_ops(model: Any) -> list[tuple[str, str]]:
    """(node name, op type) of every node in a standard domain that ONNX does not define: an op
    the converter left as the framework's own (tf2onnx does so, and only logs it)."""
    defs = require("onnx.defs", "keras")
    found = []
    for node in _all_nodes(model.graph):
        domain = node.domain or ""
        if domain in STANDARD_DOMAINS and not defs.has(node.op_type, domain):
            found.append((node.name, node.op_type))
    return found


def _all_nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_nodes(subgraph)


def softmax_outputs(model: Any) -> set[str]:
    """Graph outputs computed by a Softmax over their last axis (through Identity nodes): class
    probabilities."""
    producers = {out: node for node in model.graph.node for out in node.output}
    found = set()
    for value in model.graph.output:
        node = producers.get(value.name)
        while node is not None and node.op_type == "Identity":
            node = producers.get(node.input[0])
        if node is None or node.op_type != "Softmax":
            continue
        rank = len(value.type.tensor_type.shape.dim)
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if axis in (-1, rank - 1):
            found.add(value.name)
    return found


class ConverterLog(logging.Handler):
    """The errors a converter logged instead of raising (tf2onnx: "Tensorflow op [...] is not
    supported")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(record.getMessage())


@contextmanager
def converter_errors(logger: str) -> Iterator[ConverterLog]:
    """Collect what ``logger`` (and its children) log at ERROR while the block runs."""
    handler = ConverterLog()
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield handler
    finally:
        target.removeHandler(handler)


def check_graph(model: Any, converter: str, logged: list[str]) -> None:
    """ImportFailed when the graph holds ops ONNX does not define, or ignores an input."""
    unconverted = unconverted_ops(model)
    if unconverted:
        node, op = unconverted[0]
        said = next((line for line in logged if op in line), "")
        raise ImportFailed(
            f"{converter} could not convert op {op!r} (node {node!r}) to ONNX"
            + (f": {said}" if said else "")
            + "; rewrite that part of the model with ops that have ONNX equivalents, or serve "
            "the model with runtime: python (docs/python-models.md)"
        )
    unread = unread_inputs(model)
    if unread:
        raise ImportFailed(never_read(unread[0], converter))


def never_read(name: str, converter: str) -> str:
    """Why a graph ignores (or lacks) one of the model's inputs."""
    return (
        f"the exported graph never reads input {name!r}: the model computed its answer outside "
        f"the framework's ops (numpy or plain Python), which {converter} recorded as a "
        "constant; use the framework's ops throughout"
    )


def classification(
    specs: tuple[TensorSpec, ...],
    probabilities: set[str],
    options: ImportOptions,
) -> tuple[str, bool] | None:
    """The output holding class scores and whether the server must apply softmax to it: the one
    output a Softmax computes (softmax off), or, given labels, the one output with that many
    columns (logits: softmax on); ``settings["scores"]`` names it outright."""
    by_name = {spec.name: spec for spec in specs}
    named = options.settings.get("scores")
    if named is not None:
        if str(named) not in by_name:
            raise ImportFailed(f"setting scores={named!r}: no output of that name: {list(by_name)}")
        chosen = by_name[str(named)]
    else:
        soft = [s for s in specs if s.name in probabilities and len(s.shape) == 2]
        if len(soft) == 1:
            chosen = soft[0]
        elif options.labels is None:
            return None
        else:
            columns = [s for s in specs if len(s.shape) == 2 and s.shape[1] == len(options.labels)]
            if len(columns) != 1:
                raise ImportFailed(
                    f"{len(options.labels)} labels given, but no single output has that many "
                    f"columns ({_shapes(specs)}); name the scores with --set scores=OUTPUT"
                )
            chosen = columns[0]
    classes = chosen.shape[-1] if len(chosen.shape) == 2 else None
    if options.labels is not None and classes not in (None, -1, len(options.labels)):
        raise ImportFailed(
            f"{len(options.labels)} labels given for output {chosen.name!r} of {classes} classes"
        )
    return chosen.name, chosen.name not in probabilities


def _shapes(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name} {list(s.shape)}" for s in specs)


def describe(
    model: Any,
    version_dir: Path,
    options: ImportOptions,
    original: Callable[[dict[str, Array]], dict[str, Array]],
    framework: str,
    notes: list[str],
) -> Exported:
    """Save the edited graph as the version's artefact, read its signature back as the server
    will, and describe it: batching, classification, examples, checks."""
    fixed = free_batch_axis(model)
    probabilities = softmax_outputs(model)
    artefact = version_dir / ARTIFACT
    artefact.write_bytes(model.SerializeToString())
    try:
        runtime = OnnxRuntime.load(artefact, OnnxOptions())
    except ModelLoadError as exc:
        raise ImportFailed(str(exc)) from exc
    inputs, outputs = runtime.inputs, runtime.outputs
    clash = sorted(RESERVED & {s.name for s in outputs})
    if clash:
        raise ImportFailed(f"output {clash[0]!r} would clash with the classification outputs")
    cannot = (
        f"input {fixed[0]!r} has a fixed first dimension, so the graph takes one row at a time"
        if fixed
        else None
    )
    manifest: dict[str, Any] = {
        "runtime": "onnx",
        "artifact": ARTIFACT,
        "batching": batching(cannot, notes),
    }
    checks: dict[str, Check] = {spec.name: "close" for spec in outputs}
    scores = classification(outputs, probabilities, options)
    if scores is not None:
        output, softmax = scores
        manifest["postprocess"] = {"classification": {"output": output, "softmax": softmax}}
        checks[output] = "top1"
        notes.append(
            f"classifier: {output!r} holds {'logits' if softmax else 'probabilities'}"
            f" (postprocess softmax {'on' if softmax else 'off'})"
        )
    return Exported(
        manifest=manifest,
        original=original,
        examples=examples_for(inputs, options),
        checks=checks,
        labels=options.labels,
        notes=notes,
        framework=framework,
    )


def examples_for(inputs: tuple[TensorSpec, ...], options: ImportOptions) -> dict[str, Array]:
    """The caller's examples, in the dtypes the graph takes (a float64 array for an FP32 input
    is what a client would convert before sending), or rows drawn from the signature."""
    default = inputs[0].name if len(inputs) == 1 else ""
    given = example_arrays(options, default)
    if given is None:
        return sample_inputs(inputs)
    specs = {spec.name: spec for spec in inputs}
    unknown = sorted(set(given) - set(specs))
    missing = sorted(set(specs) - set(given))
    if unknown or missing:
        raise ImportFailed(
            f"example inputs {sorted(given)} do not match the model's inputs {sorted(specs)}"
        )
    return {
        name: np.asarray(value).astype(numpy_dtype(specs[name].datatype), copy=False)
        if specs[name].datatype != "BYTES"
        else np.asarray(value)
        for name, value in given.items()
    }
