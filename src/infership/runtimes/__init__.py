"""Runtimes by name, imported lazily so a missing optional dependency fails at load, clearly."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from infership.errors import ModelLoadError
from infership.runtimes.base import Runtime

RUNTIMES: dict[str, str] = {
    "onnx": "infership.runtimes.onnx:OnnxRuntime",
}
"""Runtime name in model.yaml → ``module:Class``. Each class has ``load(path, options)``."""


def load_runtime(kind: str, path: Path, options: Any) -> Runtime:
    """Load ``path`` with the runtime registered as ``kind``."""
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
    runtime: Runtime = getattr(module, class_name).load(path, options)
    return runtime


__all__ = ["RUNTIMES", "Runtime", "load_runtime"]
