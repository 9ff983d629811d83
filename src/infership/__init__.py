"""infership: turn a trained model into a fast, observable, secure inference service."""

from infership.errors import InfershipError

__version__ = "0.1.0"

__all__ = ["InfershipError", "__version__"]
