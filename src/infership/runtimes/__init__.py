"""Runtimes by name, imported lazily so a missing optional dependency fails at load, clearly."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from infership.errors import ModelLoadError
from infership.runtimes.base import Runtime

RUNTIMES: dict[str, str] = {
    "onnx": "infership.runtimes.onnx:OnnxRuntime",
    "torch": "infership.runtimes.torch:TorchRuntime",
    "python": "infership.runtimes.python:PythonRuntime",
}
"""Runtime name in model.yaml → ``module:Class``. Each class has ``load(path, options)``."""


def load_runtime(kind: str, path: Path, options: Any, data: bytes | None = None) -> Runtime:
    """Load ``path`` with the runtime registered as ``kind``; from ``data`` (the file's bytes,
    decrypted in memory) when given, which must then never reach the disk."""
    try:
        module_name, class_name = RUNTIMES[kind].split(":")
    except KeyError:
        raise ModelLoadError(f"unknown runtime {kind!r}; known: {sorted(RUNTIMES)}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(
            f"runtime {kind!r} needs a package that is not installed: {exc.name}"
        ) from exc
    loader = getattr(module, class_name).load
    runtime: Runtime = loader(path, options) if data is None else loader(path, options, data)
    return runtime


__all__ = ["RUNTIMES", "Runtime", "load_runtime"]
