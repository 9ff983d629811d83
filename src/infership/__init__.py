"""infership: turn a trained model into a fast, observable, secure inference service."""

from __future__ import annotations

from typing import Any

from infership.errors import InfershipError

__version__ = "0.1.0"

__all__ = ["InfershipError", "__version__", "import_path", "save_model", "verify_parity"]

_IMPORTING = frozenset({"save_model", "import_path", "verify_parity"})


def __getattr__(name: str) -> Any:
    # infership.save_model(...) from a notebook, without every server start paying for it.
    if name in _IMPORTING:
        from infership import importing

        return getattr(importing, name)
    raise AttributeError(f"module 'infership' has no attribute {name!r}")
