"""A deterministic in-process runtime for tests and benchmarks of everything but compute."""

from __future__ import annotations

from collections.abc import Callable

from infership.runtimes.base import Runtime
from infership.types import Array, TensorSpec


class FakeRuntime(Runtime):
    """Runs ``fn`` on each batch, like ``httpx.MockTransport`` runs a handler.

    >>> rt = FakeRuntime(lambda x: {"y": x["x"] * 2}, inputs=(TensorSpec("x", "FP32", (-1, 2)),),
    ...                  outputs=(TensorSpec("y", "FP32", (-1, 2)),))
    """

    platform = "infership_fake"

    def __init__(
        self,
        fn: Callable[[dict[str, Array]], dict[str, Array]],
        *,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
    ) -> None:
        super().__init__(inputs, outputs)
        self._fn = fn
        self.batches: list[int] = []
        """Rows of every batch computed, in order (for assertions)."""

    def infer(self, inputs: dict[str, Array]) -> dict[str, Array]:
        self.batches.append(len(next(iter(inputs.values()))))
        return self._fn(inputs)
