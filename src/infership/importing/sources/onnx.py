"""ONNX models as they are: a ``.onnx`` file or an ``onnx.ModelProto``. Also where the exports
of frameworks with no importer of their own arrive (MXNet's and Caffe's exporters, docs/import.md).

The original is the same graph in onnxruntime, so the parity check proves what the server adds
around it: the signature read back, the batch axis, the labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from infership.errors import ImportFailed, ModelLoadError
from infership.importing.source import (
    Check,
    Exported,
    ImportOptions,
    Source,
    batching,
    example_arrays,
    sample_inputs,
)
from infership.runtimes.onnx import OnnxRuntime
from infership.types import Array, TensorSpec

ARTIFACT = "model.onnx"


class OnnxSource(Source):
    name = "onnx"
    extra = "optimize"  # the onnx package, for a ModelProto; a file needs only onnxruntime

    def accepts(self, model: object) -> bool:
        return type(model).__name__ == "ModelProto" and type(model).__module__.startswith("onnx")

    def accepts_path(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".onnx"

    def load(self, path: Path, options: ImportOptions) -> object:
        return path.read_bytes()

    def export(self, model: object, options: ImportOptions, version_dir: Path) -> Exported:
        data = model if isinstance(model, bytes) else _serialized(model)
        artefact = version_dir / ARTIFACT
        artefact.write_bytes(data)
        session = _session(artefact)
        try:
            signature = OnnxRuntime(session, artefact)
        except ModelLoadError as exc:
            raise ImportFailed(str(exc)) from exc
        inputs, outputs = signature.inputs, signature.outputs
        notes: list[str] = []
        batches = batching(_unbatched(inputs, outputs), notes)
        default = inputs[0].name if len(inputs) == 1 else ""
        examples = example_arrays(options, default) or sample_inputs(inputs)
        manifest: dict[str, Any] = {"runtime": "onnx", "artifact": ARTIFACT, "batching": batches}
        checks: dict[str, Check] = {spec.name: "close" for spec in outputs}
        if options.labels is not None:
            scores = outputs[0].name
            softmax = bool(options.settings.get("softmax", True))
            manifest["postprocess"] = {"classification": {"output": scores, "softmax": softmax}}
            checks[scores] = "top1"
            notes.append(f"classification on {scores!r} (softmax {'on' if softmax else 'off'})")

        def original(feed: dict[str, Array]) -> dict[str, Array]:
            names = [spec.name for spec in outputs]
            return dict(zip(names, session.run(names, feed), strict=True))

        return Exported(
            manifest=manifest,
            original=original,
            examples=examples,
            checks=checks,
            labels=options.labels,
            notes=notes,
            framework=f"ONNX (opset {_opset(data)})",
        )


def _serialized(model: Any) -> bytes:
    data: bytes = model.SerializeToString()
    return data


def _session(path: Path) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ImportFailed(f"onnxruntime cannot load the model: {exc}") from exc


def _unbatched(inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> str | None:
    """Why the graph cannot batch (a tensor without a free first dimension), or None."""
    fixed = [s.name for s in (*inputs, *outputs) if not s.shape or s.shape[0] != -1]
    if not fixed:
        return None
    return (
        f"{fixed[0]!r} has no free first (batch) dimension; re-export with a dynamic batch axis "
        "to batch requests"
    )


def _opset(data: bytes) -> str:
    try:
        import onnx
    except ModuleNotFoundError:
        return "?"
    model = onnx.load_from_string(data)
    return ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
