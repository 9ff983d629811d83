"""PyTorch: an ``nn.Module`` (or a torch.export program, live or saved as ``.pt2``) → ONNX with
torch's own exporter, or a torch.export ``.pt2`` program for ``runtime: torch``.

How a model goes out:

1. the module is wrapped so that its inputs are named by ``forward``'s parameters (or the
   ``input_names`` setting) and its outputs come out as a flat tuple (``output``, or
   ``output_0``... for several, the keys of a returned dict, or ``output_names``);
2. ``torch.export.export`` traces it, in eval mode without gradients, with a dynamic batch
   axis (dimension 0 of every input). A model whose code fixes the batch size is traced again
   at batch 1 and written with ``max_batch_size: 1`` and a note;
3. that program goes through ``torch.onnx.export(..., dynamo=True)``, the exporter torch
   maintains (it needs ``onnxscript``). The TorchScript-based exporter (``dynamo=False``) is
   deprecated and bakes traced shapes into the graph, so it is not used. When the ONNX
   translation fails (an operator with no ONNX function, onnxscript missing, a graph
   onnxruntime cannot load) the same program is saved as ``model.pt2`` instead, with a note;
   ``format="pt2"`` asks for that directly, ``format="onnx"`` makes the failure an error.

A torchvision transform pipeline given as ``preprocess`` is mapped onto ``preprocess.image``
(``torch_transforms.py``); the public input is then ``image`` (encoded images) and the original
decodes each with Pillow and runs the user's own pipeline, so the parity check covers the
mapping too. Pickled ``torch.save`` checkpoints are never loaded: unpickling runs code.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infership.errors import ConfigError, ImportFailed
from infership.importing.source import (
    MAX_BATCH_SIZE,
    Check,
    Exported,
    ImportOptions,
    Source,
    example_arrays,
    one_row,
    rows,
)
from infership.importing.sources.torch_transforms import map_pipeline
from infership.types import Array, datatype_of

ONNX_ARTIFACT = "model.onnx"
PT2_ARTIFACT = "model.pt2"
IMAGE_INPUT = "image"
_TRACE_ROWS = 2
"""Rows traced: torch.export specialises a dimension of size 1 to a constant."""
_PICKLE_SUFFIXES = (".pt", ".pth")
_SETTINGS = (
    "input_names",
    "output_names",
    "classifier",
    "classification_output",
    "softmax",
    "max_batch_size",
)
_NOISY_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch._subclasses.fake_tensor",
    "torch.fx.experimental.symbolic_shapes",
)
_DATATYPES = {
    "torch.bool": "BOOL",
    "torch.uint8": "UINT8",
    "torch.int8": "INT8",
    "torch.int16": "INT16",
    "torch.int32": "INT32",
    "torch.int64": "INT64",
    "torch.float16": "FP16",
    "torch.float32": "FP32",
    "torch.float64": "FP64",
}
_NO_PICKLES = (
    "a torch.save checkpoint is a pickle, and unpickling runs whatever code the file names, so "
    "infership never loads one. If you trust it, load it in Python yourself (your model class "
    "and load_state_dict) and call infership.save_model(model, ..., example_inputs=...); or "
    "save it with torch.export.save(torch.export.export(model, example_args), 'model.pt2') "
    "and import that file"
)


class TorchSource(Source):
    """``torch.nn.Module`` objects, live ``torch.export.ExportedProgram`` objects and ``.pt2``
    files; ``.pt``/``.pth`` files are recognised only to be refused with the reason."""

    name = "torch"
    extra = "torch"

    def accepts(self, model: object) -> bool:
        return _is_a(model, "torch.nn.modules.module", "Module") or _is_a(
            model, "torch.export.exported_program", "ExportedProgram"
        )

    def accepts_path(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in (".pt2", *_PICKLE_SUFFIXES)

    def load(self, path: Path, options: ImportOptions) -> object:
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            consent = (
                " (trust_pickle does not change this: a checkpoint usually holds only weights, "
                "and the model's class must come from your code)"
                if options.settings.get("trust_pickle")
                else ""
            )
            raise ImportFailed(f"{path}: {_pickle_refusal(path)}{consent}")
        return _load_program(path)

    def export(self, model: object, options: ImportOptions, version_dir: Path) -> Exported:
        import torch

        settings = _Settings(options.settings)
        target = _Target.of(model, settings)
        notes: list[str] = []
        image = _ImageInput.of(options.preprocess, target, options, notes)
        if image is not None:
            examples = image.examples
            traced = {target.public[0]: image.tensors(image.examples[IMAGE_INPUT])}
        else:
            examples = _tensor_examples(options, target, notes)
            traced = examples
        wrapper = target.wrapper()
        program, batching = _trace(wrapper, target, traced, notes)
        outputs = _outputs(program, settings, target.output_keys)
        artefact = _write(program, options, version_dir, traced, outputs, notes)
        manifest = _manifest(artefact, target, traced, outputs, batching, settings)
        if image is not None:
            manifest["preprocess"] = {"image": image.settings}
        checks: dict[str, Check] = {o.name: "close" for o in outputs}
        _classification(manifest, checks, outputs, options, settings, notes)
        return Exported(
            manifest=manifest,
            original=_original(wrapper, target, outputs, image, batching),
            examples=examples,
            checks=checks,
            labels=options.labels,
            notes=notes,
            framework=f"torch {torch.__version__} {target.kind}",
        )


# --- what is exported -------------------------------------------------------------------


class _Settings:
    """``options.settings`` as this source reads them; from the command line every value is a
    string, so lists may be comma-separated and booleans ``true``/``false``."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        # trust_pickle is read by load (which refuses torch pickles all the same), not here.
        unknown = sorted(set(raw) - set(_SETTINGS) - {"trust_pickle"})
        if unknown:
            raise ImportFailed(
                f"unknown torch setting(s) {unknown}; the torch importer takes {list(_SETTINGS)}"
            )
        self._raw = raw

    def names(self, key: str) -> list[str] | None:
        value = self._raw.get(key)
        if value is None:
            return None
        names = value.split(",") if isinstance(value, str) else [str(v) for v in value]
        return [n.strip() for n in names]

    def flag(self, key: str, default: bool) -> bool:
        value = self._raw.get(key, default)
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)

    def text(self, key: str) -> str | None:
        value = self._raw.get(key)
        return None if value is None else str(value)

    def number(self, key: str, default: int) -> int:
        value = self._raw.get(key, default)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ImportFailed(f"setting {key}: {value!r} is not a whole number") from None
        if number < 1:
            raise ImportFailed(f"setting {key}: must be at least 1, got {number}")
        return number


@dataclass
class _Target:
    """The module to export and how its inputs are named and passed."""

    module: Any
    params: list[str]
    """``forward``'s parameters, in order."""
    public: list[str]
    """The served names of those parameters (``input_names``, else the same)."""
    positional: bool
    """Call ``forward`` positionally (an exported program's module takes ``*args``)."""
    kind: str
    program_examples: tuple[Any, ...] | None = None
    output_keys: list[str] | None = None
    """Set after the first call when ``forward`` returns a dict: its keys, in order."""
    used: list[str] = field(default_factory=list)
    """The public inputs the examples give: ``public`` or a prefix of it (the rest default)."""

    @classmethod
    def of(cls, model: Any, settings: _Settings) -> _Target:
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        if _is_a(model, "torch.export.exported_program", "ExportedProgram"):
            params = list(model.graph_signature.user_inputs)
            examples = model.example_inputs[0] if model.example_inputs else None
            target = cls(_program_module(model), params, params, True, kind, examples)
        elif _is_a(model, "torch.nn.modules.module", "Module"):
            params = _forward_parameters(model)
            target = cls(model, params, params, False, kind)
        else:
            raise ImportFailed(f"the torch importer takes torch.nn.Module objects, not a {kind}")
        renamed = settings.names("input_names")
        if renamed is not None:
            if len(renamed) > len(params):
                raise ImportFailed(
                    f"setting input_names: {renamed} names {len(renamed)} inputs but forward() "
                    f"takes {len(params)} ({params})"
                )
            target.public = renamed + params[len(renamed) :]
        for name in target.public:
            if not name.isidentifier():
                raise ImportFailed(f"input name {name!r} must be a Python identifier")
        return target

    def wrapper(self) -> Any:
        """The module with named positional inputs and a flat tuple of tensors out."""
        import torch

        target = self

        class Public(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = target.module

            def forward(self, *args: Any) -> tuple[Any, ...]:
                if target.positional:
                    result = self.inner(*args)
                else:
                    result = self.inner(**dict(zip(target.params, args, strict=False)))
                return target.flatten(result)

        # torch.export names the program's inputs after forward's signature: a class of its
        # own per export, whose forward says the public names.
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        names = ["self", *self.used]
        signature = inspect.Signature([inspect.Parameter(n, kind) for n in names])
        setattr(Public.forward, "__signature__", signature)  # noqa: B010 (mypy: no attribute)
        return Public()

    def flatten(self, result: Any) -> tuple[Any, ...]:
        import torch

        if isinstance(result, torch.Tensor):
            return (result,)
        if isinstance(result, Mapping) and all(
            isinstance(v, torch.Tensor) for v in result.values()
        ):
            if self.output_keys is None:
                self.output_keys = [str(k) for k in result]
            return tuple(result.values())
        if isinstance(result, list | tuple) and all(isinstance(t, torch.Tensor) for t in result):
            return tuple(result)
        raise ImportFailed(
            f"forward() returned {type(result).__name__}; the torch importer takes a tensor, a "
            "tuple or list of tensors, or a dict of tensors"
        )


def _program_module(program: Any) -> Any:
    """An exported program as a module that a fresh torch.export may trace at another batch
    size: the unlifted module checks that every input has the shapes it was exported with, so
    a program exported at a fixed batch would refuse any other. Re-tracing checks the graph
    itself: a graph that really depends on that batch size fails there."""
    try:
        module = program.module(check_guards=False)  # the guards become forward pre-hooks
    except TypeError:  # a torch without check_guards
        module = program.module()
    hooks = getattr(module, "_forward_pre_hooks", {})
    for key, hook in list(hooks.items()):
        if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
            del hooks[key]
    return module


def _forward_parameters(module: Any) -> list[str]:
    names = []
    for parameter in inspect.signature(module.forward).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        names.append(parameter.name)
    if not names:
        raise ImportFailed(
            f"{type(module).__qualname__}.forward() takes no named parameters; the torch "
            "importer names the served inputs after them"
        )
    return names


def _required(module: Any) -> set[str]:
    """Parameters of ``forward`` without a default value."""
    try:
        parameters = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {
        p.name
        for p in parameters
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _tensor_examples(options: ImportOptions, target: _Target, notes: list[str]) -> dict[str, Array]:
    """The caller's example inputs by public name, checked against forward's parameters."""
    given = example_arrays(options, target.public[0])
    if given is None and target.program_examples is not None:
        given = {
            name: value.detach().cpu().numpy()
            for name, value in zip(target.public, target.program_examples, strict=False)
        }
        notes.append("examples: the sample inputs saved in the .pt2 program")
    if given is None:
        raise ImportFailed(
            "a torch model needs example_inputs: a tensor or array of a few rows (batch first) "
            f"for forward({', '.join(target.public)}), or a dict of them by name; the exporter "
            "traces the model with them and the parity check runs them"
        )
    unknown = sorted(set(given) - set(target.public))
    if unknown:
        raise ImportFailed(
            f"example_inputs names {unknown}, which forward() does not take; its inputs are "
            f"{target.public}"
        )
    used = [n for n in target.public if n in given]
    if used != target.public[: len(used)]:
        # The traced program takes its inputs positionally: a gap would shift them.
        raise ImportFailed(
            f"example_inputs gives {used} but not every input before them; forward() takes "
            f"{target.public}"
        )
    left_out = target.params[len(used) :]
    required = set(target.params) if target.positional else _required(target.module)
    lacking = [p for p in left_out if p in required]
    if lacking:
        raise ImportFailed(
            f"example_inputs lacks {lacking}: forward() needs every parameter without a default"
        )
    target.used = used
    return {n: _as_model_dtype(n, given[n], target.module, notes) for n in used}


def _as_model_dtype(name: str, array: Array, module: Any, notes: list[str]) -> Array:
    """numpy's default float64 for a float32 model: the served input takes the model's dtype."""
    array = np.asarray(array)
    if array.dtype != np.float64:
        return array
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
    if dtype is None or str(dtype) == "torch.float64":
        return array
    wanted = np.dtype(str(dtype).removeprefix("torch."))
    notes.append(f"example input {name!r}: float64 given, cast to the model's {wanted}")
    return array.astype(wanted)


# --- tracing and writing --------------------------------------------------------------------


def _trace(
    wrapper: Any, target: _Target, examples: Mapping[str, Array], notes: list[str]
) -> tuple[Any, bool]:
    """torch.export with a dynamic batch axis; at batch 1 when the code fixes the batch size.
    Returns the program and whether it batches."""
    import torch

    names = target.used
    count = rows(examples)
    picked = np.arange(_TRACE_ROWS) % count  # repeat a single row: size 1 is specialised
    device = _device(wrapper)
    batched = tuple(_tensor(examples[n][picked], device) for n in names)
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet(), _evaluating(wrapper), torch.no_grad():
            dynamic = tuple({0: batch} for _ in names)
            return torch.export.export(wrapper, batched, dynamic_shapes=dynamic), True
    except ImportFailed:
        raise
    except Exception as exc:  # torch.export raises many kinds; the static try tells which
        why = _first_line(exc)
    single = tuple(_tensor(examples[n][:1], device) for n in names)
    try:
        with _quiet(), _evaluating(wrapper), torch.no_grad():
            program = torch.export.export(wrapper, single)
    except ImportFailed:
        raise
    except Exception as exc:
        hint = (
            "; export the program again with a dynamic batch (dynamic_shapes)"
            if target.positional
            else ""
        )
        raise ImportFailed(
            f"torch.export cannot trace the model: {_export_error(exc)}{hint}"
        ) from exc
    notes.append(
        one_row(
            f"the model cannot take a free batch dimension ({why}); each request carries one row"
        )
    )
    return program, False


def _write(
    program: Any,
    options: ImportOptions,
    version_dir: Path,
    examples: Mapping[str, Array],
    outputs: list[_Output],
    notes: list[str],
) -> str:
    """Write ``model.onnx``, or ``model.pt2`` when asked or when ONNX export fails."""
    import torch

    wanted = (options.format or "").lower() or None
    if wanted not in (None, "onnx", "pt2"):
        raise ImportFailed(f"format {options.format!r}: the torch importer writes onnx or pt2")
    if wanted != "pt2":
        try:
            path = version_dir / ONNX_ARTIFACT
            opset = _write_onnx(program, options, path, examples, [o.name for o in outputs])
        except _OnnxFailed as exc:
            (version_dir / ONNX_ARTIFACT).unlink(missing_ok=True)
            if wanted == "onnx":
                raise ImportFailed(f"ONNX export failed: {exc}") from exc
            notes.append(
                f"written as a torch.export program (model.pt2): ONNX export failed: {exc}"
            )
        else:
            notes.append(f"exported to ONNX by torch.onnx.export (dynamo), opset {opset}")
            return ONNX_ARTIFACT
    else:
        notes.append("written as a torch.export program (model.pt2), as asked")
    weight = next(iter(program.state_dict.values()), None)
    if weight is not None and weight.device.type != "cpu":
        # Saved for the CPU, where every server can load it; torch.device in model.yaml
        # moves it to a GPU at load.
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, "cpu")
    with _quiet():
        torch.export.save(program, str(version_dir / PT2_ARTIFACT))
    return PT2_ARTIFACT


class _OnnxFailed(Exception):
    """The ONNX route failed; the message says why in one line."""


def _write_onnx(
    program: Any,
    options: ImportOptions,
    path: Path,
    examples: Mapping[str, Array],
    output_names: list[str],
) -> int:
    import torch

    try:
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter translates with it)
    except ModuleNotFoundError:
        raise _OnnxFailed(
            "onnxscript is not installed (pip install onnxscript), torch.onnx needs it"
        ) from None
    try:
        with _quiet():
            torch.onnx.export(
                program,
                f=str(path),
                dynamo=True,
                external_data=False,
                opset_version=options.opset,
                output_names=output_names,
                verbose=False,
            )
    except Exception as exc:  # torch.onnx wraps every failure in its own error types
        raise _OnnxFailed(_onnx_error(exc)) from exc
    return _check_onnx(path, examples)


def _check_onnx(path: Path, examples: Mapping[str, Array]) -> int:
    """onnxruntime must load and run what was written; returns the opset."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session.run(None, {i.name: examples[i.name][:1] for i in session.get_inputs()})
    except Exception as exc:  # onnxruntime's errors are untyped
        raise _OnnxFailed(f"onnxruntime cannot run the exported graph: {_first_line(exc)}") from exc
    return _opset(path)


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


@dataclass(frozen=True)
class _Output:
    name: str
    datatype: str
    shape: tuple[int, ...]


def _outputs(program: Any, settings: _Settings, keys: list[str] | None) -> list[_Output]:
    """The program's outputs, named ``output``/``output_N``, a dict's keys or as asked."""
    (node,) = (n for n in program.graph.nodes if n.op == "output")
    values = [arg.meta.get("val") for arg in node.args[0]]
    names = settings.names("output_names") or keys
    if names is None:
        names = ["output"] if len(values) == 1 else [f"output_{i}" for i in range(len(values))]
    if len(names) != len(values):
        raise ImportFailed(
            f"setting output_names: {names} names {len(names)} outputs but forward() returns "
            f"{len(values)}"
        )
    outputs = []
    for name, value in zip(names, values, strict=True):
        datatype = _DATATYPES.get(str(getattr(value, "dtype", None)))
        if datatype is None:
            raise ImportFailed(f"output {name!r}: dtype {getattr(value, 'dtype', value)}")
        shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
        outputs.append(_Output(name, datatype, shape))
    return outputs


def _manifest(
    artefact: str,
    target: _Target,
    examples: Mapping[str, Array],
    outputs: list[_Output],
    batching: bool,
    settings: _Settings,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "runtime": "onnx" if artefact == ONNX_ARTIFACT else "torch",
        "artifact": artefact,
    }
    inputs = []
    for name in target.used:
        array = examples[name]
        batch = -1 if batching else 1
        shape = [batch, *array.shape[1:]]
        inputs.append({"name": name, "datatype": datatype_of(array), "shape": shape})
    manifest["inputs"] = inputs
    manifest["outputs"] = [
        {"name": o.name, "datatype": o.datatype, "shape": list(o.shape)} for o in outputs
    ]
    size = settings.number("max_batch_size", MAX_BATCH_SIZE) if batching else 1
    manifest["batching"] = {"max_batch_size": size}
    return manifest


def _classification(
    manifest: dict[str, Any],
    checks: dict[str, Check],
    outputs: list[_Output],
    options: ImportOptions,
    settings: _Settings,
    notes: list[str],
) -> None:
    """Class scores → ``postprocess.classification`` when labels or ``classifier`` say so."""
    chosen = settings.text("classification_output")
    if options.labels is None and not settings.flag("classifier", chosen is not None):
        return
    if chosen is None:
        if len(outputs) != 1:
            raise ImportFailed(
                f"a classifier with several outputs ({[o.name for o in outputs]}): name the "
                "class scores with the setting classification_output"
            )
        chosen = outputs[0].name
    scores = next((o for o in outputs if o.name == chosen), None)
    if scores is None:
        raise ImportFailed(f"setting classification_output: no output {chosen!r}")
    if len(scores.shape) != 2 or scores.shape[1] < 1:
        raise ImportFailed(
            f"output {chosen!r} has shape {list(scores.shape)}; class scores are [batch, classes]"
        )
    classes = scores.shape[1]
    if options.labels is not None and len(options.labels) != classes:
        raise ImportFailed(
            f"{len(options.labels)} labels given but output {chosen!r} scores {classes} classes"
        )
    softmax = settings.flag("softmax", True)
    manifest["postprocess"] = {
        "classification": {"output": chosen, "softmax": softmax, "top_k": min(5, classes)}
    }
    checks[chosen] = "top1"
    notes.append(f"classification on {chosen!r} (softmax {'on' if softmax else 'off'})")


def _original(
    wrapper: Any,
    target: _Target,
    outputs: list[_Output],
    image: _ImageInput | None,
    batching: bool,
) -> Callable[[dict[str, Array]], dict[str, Array]]:
    """The user's module (and transform pipeline) on public inputs, in eval mode."""
    import torch

    names = [o.name for o in outputs]
    device = _device(wrapper)

    def run(tensors: list[Any]) -> list[Array]:
        with _evaluating(wrapper), torch.no_grad():
            return [t.detach().cpu().numpy() for t in wrapper(*tensors)]

    def original(inputs: dict[str, Array]) -> dict[str, Array]:
        if image is not None:
            tensors = [_tensor(image.tensors(inputs[IMAGE_INPUT]), device)]
        else:
            tensors = [_tensor(inputs[n], device) for n in target.used]
        if batching:
            results = [run(tensors)]
        else:  # the model takes one row at a time
            results = [run([t[i : i + 1] for t in tensors]) for i in range(len(tensors[0]))]
        return {name: np.concatenate([r[i] for r in results]) for i, name in enumerate(names)}

    return original


# --- images ---------------------------------------------------------------------------------


@dataclass
class _ImageInput:
    """The public ``image`` input: its ``preprocess.image`` settings, the example images, and
    how the original turns encoded images into the model's float32 batch."""

    settings: dict[str, Any]
    examples: dict[str, Array]
    decode: Callable[[list[bytes]], Array]

    @classmethod
    def of(
        cls, preprocess: Any, target: _Target, options: ImportOptions, notes: list[str]
    ) -> _ImageInput | None:
        if preprocess is None:
            return None
        needed = set(target.params) if target.positional else _required(target.module)
        if len(needed) > 1:
            raise ImportFailed(
                f"preprocess feeds one image tensor, but forward() needs {sorted(needed)}"
            )
        model_input = target.public[0]
        target.used = [model_input]
        if isinstance(preprocess, Mapping):
            return cls._declared(preprocess, model_input, options, notes)
        mapping = map_pipeline(preprocess)
        settings = mapping.settings(model_input)
        notes.append(
            f"preprocess.image from {' -> '.join(mapping.steps)}; the public input is "
            f"{IMAGE_INPUT!r} (encoded images)"
        )
        examples = _image_examples(options, settings, notes)
        return cls(settings, examples, _pillow_pipeline(preprocess))

    @classmethod
    def _declared(
        cls,
        preprocess: Mapping[str, Any],
        model_input: str,
        options: ImportOptions,
        notes: list[str],
    ) -> _ImageInput:
        """A ready ``preprocess`` mapping: the original runs the server's own pre-processing,
        so the parity check covers the model, not that mapping (which the caller wrote)."""
        from infership.processing.image import ImagePreprocessor
        from infership.repository.manifest import ImagePreprocess

        if set(preprocess) != {"image"}:
            raise ImportFailed(
                f"preprocess {sorted(preprocess)}: the torch importer takes a torchvision "
                "pipeline or a model.yaml preprocess mapping with 'image'"
            )
        raw = {"input": model_input, **dict(preprocess["image"]), "public_input": IMAGE_INPUT}
        try:
            config = ImagePreprocess.model_validate(raw)
        except ValueError as exc:
            raise ImportFailed(f"preprocess.image: {exc}") from exc
        settings = config.model_dump(mode="json")
        notes.append(
            "preprocess.image as given: the parity check runs the server's own image "
            "pre-processing on both sides, so it checks the model, not that mapping"
        )
        examples = _image_examples(options, settings, notes)
        return cls(settings, examples, ImagePreprocessor(config, max_pixels=1 << 30).batch)

    def tensors(self, images: Array) -> Array:
        """Encoded images (a BYTES array) → the model's float32 batch."""
        return self.decode([bytes(item) for item in np.asarray(images, dtype=object).ravel()])


def _pillow_pipeline(pipeline: Any) -> Callable[[list[bytes]], Array]:
    """Decode with Pillow and apply the user's own pipeline, as a Flask handler does."""

    def decode(images: list[bytes]) -> Array:
        from PIL import Image

        batch = []
        for data in images:
            with Image.open(io.BytesIO(data)) as opened:
                picture = opened.convert("RGB")
            batch.append(np.asarray(pipeline(picture), dtype=np.float32))
        return np.ascontiguousarray(np.stack(batch))

    return decode


def _image_examples(
    options: ImportOptions, settings: Mapping[str, Any], notes: list[str]
) -> dict[str, Array]:
    """Example images as encoded bytes: the caller's (bytes, files or PIL images), or drawn."""
    given = options.example_inputs
    if isinstance(given, Mapping):
        if set(given) != {IMAGE_INPUT}:
            raise ImportFailed(
                f"with preprocess, example_inputs are encoded images under {IMAGE_INPUT!r}, "
                f"not {sorted(given)}"
            )
        given = given[IMAGE_INPUT]
    if given is None:
        images = _draw_images(settings)
        notes.append(
            f"examples: {len(images)} drawn PNG images (pass example_inputs=[photos] to check "
            "your own)"
        )
    else:
        items = list(given) if isinstance(given, list | tuple | np.ndarray) else [given]
        images = [_encoded(item) for item in items]
        if not images:
            raise ImportFailed("example_inputs holds no images")
    return {IMAGE_INPUT: np.array(images, dtype=object)}


def _encoded(item: Any) -> bytes:
    if isinstance(item, bytes | bytearray | np.bytes_):
        return bytes(item)
    if isinstance(item, str | Path):
        return Path(item).read_bytes()
    if hasattr(item, "save") and hasattr(item, "mode"):  # a PIL image
        buffer = io.BytesIO()
        item.save(buffer, format="PNG")
        return buffer.getvalue()
    raise ImportFailed(
        f"example image of type {type(item).__name__}: give encoded bytes, a file path or a "
        "PIL image"
    )


def _draw_images(settings: Mapping[str, Any]) -> list[bytes]:
    """Smooth synthetic pictures in landscape, portrait and square shapes, below twice the
    target size (so the server decodes them without draft-mode or box reduction)."""
    from PIL import Image

    side = int(settings.get("resize_shorter") or max(settings["resize"]))
    sizes = [(side * 4 // 3, side), (side, side * 3 // 2), (side + 8, side + 8)]
    rng = np.random.default_rng(0)
    images = []
    for width, height in sizes:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        phase = rng.uniform(0, 2 * np.pi, size=(3, 2))
        period = rng.uniform(8, 40, size=(3, 2))
        channels = [
            127.5
            + 120 * np.sin(x / period[c, 0] + phase[c, 0]) * np.cos(y / period[c, 1] + phase[c, 1])
            for c in range(3)
        ]
        pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


# --- files on disk --------------------------------------------------------------------------


def _load_program(path: Path) -> Any:
    """A ``.pt2`` torch.export program, after the runtime's own check that it holds no pickled
    payloads (torch.export.load would otherwise fall back to unpickling them)."""
    import torch

    from infership.runtimes.torch import _check_export_archive, _File

    try:
        _check_export_archive(_File(path, None))
    except ConfigError as exc:
        raise ImportFailed(str(exc)) from exc
    try:
        with _quiet():
            return torch.export.load(str(path))
    except Exception as exc:  # torch raises many untyped errors for bad archives
        raise ImportFailed(f"{path}: torch.export cannot load it: {_first_line(exc)}") from exc


def _pickle_refusal(path: Path) -> str:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        names = []
    if any("/code/" in f"/{n}" for n in names):
        return (
            "a TorchScript archive: serve it as it is (runtime: torch, file named model.ts, "
            "with inputs and outputs declared in model.yaml; docs/torch.md), or import the "
            "nn.Module it was scripted from with infership.save_model"
        )
    return _NO_PICKLES


# --- helpers --------------------------------------------------------------------------------


def _device(module: Any) -> Any:
    """Where the module's weights are (examples go there too); the CPU for one without any."""
    import torch

    first = next(iter(module.parameters()), None)
    return torch.device("cpu") if first is None else first.device


def _tensor(array: Array, device: Any) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def _is_a(model: object, module: str, name: str) -> bool:
    """Whether ``model`` is an instance of the class ``module.name``, without importing it."""
    return any(c.__module__ == module and c.__name__ == name for c in type(model).__mro__)


@contextlib.contextmanager
def _evaluating(module: Any) -> Iterator[None]:
    """Eval mode (dropout off, batch norm on running statistics) for the duration only: the
    caller's model keeps the mode it was in."""
    modes = [(m, m.training) for m in module.modules()]
    with contextlib.suppress(NotImplementedError):
        # An exported program's module refuses: its mode was fixed when it was exported.
        module.eval()
    try:
        yield
    finally:
        for child, training in modes:
            child.training = training


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.export and torch.onnx print progress and deprecation notices; the report says
    what matters."""
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        # A failed trace (retried at batch 1, or reported) logs its traceback as an error.
        logger.setLevel(logging.CRITICAL)
    try:
        # A failed guard also prints the partial graph to stderr; the error message has it all.
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else f"{text[:297]}..."


def _export_error(exc: BaseException) -> str:
    """torch.export's error in a few lines: what failed and the user's line that caused it."""
    text = str(exc)
    where = re.search(r"The following call raised this error:\s*\n(.*?\n.*?)\n", text)
    summary = _first_line(exc)
    if where:
        summary += " at " + " ".join(where.group(1).split())
    return summary


def _onnx_error(exc: BaseException) -> str:
    """torch.onnx's long report → the operator it could not translate, when it says."""
    text = "\n".join(str(e) for e in _chain(exc))
    missing = re.search(
        r"No ONNX function found for <OpOverload\(op='([^']+)', overload='(\w+)'", text
    )
    if missing:
        return f"no ONNX translation for the operator {missing.group(1)}.{missing.group(2)}"
    deepest = list(_chain(exc))[-1]
    return _first_line(deepest)


def _chain(exc: BaseException) -> Sequence[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
