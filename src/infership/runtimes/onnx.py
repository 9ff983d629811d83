"""ONNX Runtime: CPU by default; CUDA or TensorRT providers when installed and asked for."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from infership.errors import InferenceFailed, InvalidRequest, ModelLoadError
from infership.repository.manifest import OnnxOptions
from infership.runtimes.base import Runtime
from infership.types import Array, TensorSpec

log = logging.getLogger(__name__)

_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class OnnxRuntime(Runtime):
    """An ``onnxruntime.InferenceSession``; ``run`` releases the GIL, so worker threads compute
    while the event loop keeps serving."""

    platform = "onnxruntime_onnx"

    def __init__(self, session: Any, path: Path) -> None:
        super().__init__(
            inputs=tuple(_spec(arg, path) for arg in session.get_inputs()),
            outputs=tuple(_spec(arg, path) for arg in session.get_outputs()),
        )
        self._session = session
        self._path = path
        self._output_names = [spec.name for spec in self.outputs]
        self._text_inputs = tuple(spec.name for spec in self.inputs if spec.datatype == "BYTES")

    @classmethod
    def load(cls, path: Path, options: OnnxOptions, data: bytes | None = None) -> OnnxRuntime:
        """Create a session for ``path``, or for ``data`` (the model's bytes, e.g. decrypted in
        memory) when given; ``path`` then only names it. Raises ModelLoadError with the file and
        the reason."""
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = options.intra_op_threads
        session_options.inter_op_num_threads = options.inter_op_threads
        session_options.graph_optimization_level = _OPTIMIZATION[options.graph_optimization]
        spin = "1" if options.spin_wait else "0"
        session_options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        session_options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        providers = _providers(options)
        try:
            session = ort.InferenceSession(
                str(path) if data is None else data,
                sess_options=session_options,
                providers=providers,
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"{path}: onnxruntime could not load the model: {exc}") from exc
        log.info("loaded %s with %s", path, session.get_providers())
        return cls(session, path)

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def close(self) -> None:
        # Dropping the only reference frees the session's memory arenas and threads.
        self._session = None

    def infer(self, inputs: dict[str, Array]) -> dict[str, Array]:
        for name in self._text_inputs:
            if name in inputs:
                inputs = {**inputs, name: _as_text(name, inputs[name])}
        try:
            results = self._session.run(self._output_names, inputs)
        except Exception as exc:
            raise InferenceFailed(f"{self._path}: onnxruntime failed: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))


def _as_text(name: str, array: Array) -> Array:
    """BYTES elements as ``str``: an ONNX string tensor compares text, and onnxruntime gives
    ``bytes`` elements no error, only matches that never hit (an encoder's unknown category)."""
    try:
        text = [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.reshape(-1)]
    except UnicodeDecodeError:
        raise InvalidRequest(f"input {name!r} holds bytes that are not UTF-8 text") from None
    return np.array(text, dtype=object).reshape(array.shape)


def _providers(options: OnnxOptions) -> list[str]:
    available = set(ort.get_available_providers())
    chosen = [_PROVIDERS[p] for p in options.execution_providers if _PROVIDERS[p] in available]
    skipped = [p for p in options.execution_providers if _PROVIDERS[p] not in available]
    if skipped:
        log.warning("execution providers %s are not available here; using %s", skipped, chosen)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # always keep a fallback for unsupported ops
    return chosen


def _spec(arg: Any, path: Path) -> TensorSpec:
    try:
        datatype = _DATATYPES[arg.type]
    except KeyError:
        raise ModelLoadError(
            f"{path}: tensor {arg.name!r} has unsupported type {arg.type}"
        ) from None
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, datatype, shape)
