"""The seam between the server and a model's compute library.

A runtime holds one loaded model version. The scheduler calls ``infer`` from a worker thread with
batched arrays; the runtime knows nothing of HTTP, gRPC, queues or images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from infership.types import Array, TensorSpec


class Runtime(ABC):
    """One loaded model version. Subclasses set ``inputs``/``outputs`` from the model itself."""

    platform: str = "unknown"
    """OIP ``platform`` string, ``<framework>_<format>``."""
    concurrency: int = 1
    """Batches it can compute at once on its own (worker processes); the scheduler runs at
    least this many side by side."""

    def __init__(self, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> None:
        self.inputs = inputs
        self.outputs = outputs

    @abstractmethod
    def infer(self, inputs: dict[str, Array]) -> dict[str, Array]:
        """Compute one batch. Called from a worker thread; must be thread-safe if
        ``parallel_executions`` > 1. Inputs are already checked against ``inputs``."""

    def close(self) -> None:  # noqa: B027 - optional hook, most runtimes free on GC
        """Release resources; the runtime is not used afterwards."""
