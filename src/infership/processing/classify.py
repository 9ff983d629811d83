"""Class scores → top-k labels, probabilities and class indices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from infership.errors import ConfigError
from infership.processing.base import Postprocessor
from infership.repository.manifest import Classification
from infership.types import Array, TensorSpec

Floats = npt.NDArray[np.float32]


class Classifier(Postprocessor):
    """Post-processing for a classification output, as model.yaml's ``postprocess`` says."""

    def __init__(self, config: Classification, labels_path: Path | None, classes: int) -> None:
        self.config = config
        self.reads = (config.output,)
        self.top_k = min(config.top_k, classes) if classes > 0 else config.top_k
        if classes <= 0 and labels_path is None:
            raise ConfigError(
                f"output {config.output!r} has no fixed number of classes; give a labels file"
            )
        names = [str(i) for i in range(max(classes, 0))]
        if labels_path is not None:
            names = labels_path.read_text(encoding="utf-8").splitlines()
            if classes > 0 and len(names) != classes:
                raise ConfigError(
                    f"{labels_path}: has {len(names)} labels but output "
                    f"{config.output!r} has {classes} classes"
                )
        self._labels = np.array([n.encode() for n in names], dtype=object)
        k = self.top_k
        self.gives: tuple[TensorSpec, ...] = (
            TensorSpec(config.label_output, "BYTES", (-1, k)),
            TensorSpec(config.probability_output, "FP32", (-1, k)),
            TensorSpec(config.index_output, "INT64", (-1, k)),
        )

    def __call__(self, outputs: dict[str, Array]) -> dict[str, Array]:
        return self.top(outputs[self.config.output])

    def top(self, scores: Array) -> dict[str, Array]:
        """[n, classes] scores → {label: [n, k] BYTES, probability: [n, k] FP32, index}."""
        values: Floats = scores.astype(np.float32, copy=False).reshape(len(scores), -1)
        if self.config.softmax:
            values = _softmax(values)
        k = self.top_k
        top = np.argpartition(-values, k - 1, axis=1)[:, :k]
        top_values = np.take_along_axis(values, top, axis=1)
        order = np.argsort(-top_values, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return {
            self.config.label_output: self._labels[top],
            self.config.probability_output: np.take_along_axis(top_values, order, axis=1),
            self.config.index_output: top.astype(np.int64),
        }


def _softmax(x: Floats) -> Floats:
    shifted: Floats = x - x.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted
