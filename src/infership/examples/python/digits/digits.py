"""A handwritten-digit classifier served as ``runtime: python``: a scikit-learn pipeline
(standard scaling, then multinomial logistic regression) behind its own feature code.

* ``preprocess`` (per request): ``image`` FP32 [n, 8, 8], the 0-16 ink levels of
  scikit-learn's ``load_digits``, checked (``InputError`` → 400) and turned into 177 features:
  the pixels, the pixels normalised by the digit's total ink, row and column ink profiles,
  an 8-bin histogram of gradient orientations per quadrant, and the total ink. These lift the
  held-out accuracy over raw pixels (scripts/export_digits_example.py prints both).
* ``predict`` (per batch, rows of several requests stacked): the pipeline's probabilities.

The fitted pipeline is ``model.skops``: skops refuses, at load, any type it does not trust
(a pickle would run whatever it holds), and this class refuses a file with any such type.
scripts/export_digits_example.py trains it with the same ``features`` function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from infership.python import InputError, Tensor

MAX_INK = 16.0
"""load_digits' images hold integers 0 (paper) to 16 (ink)."""
ORIENTATIONS = 8
FEATURES = 64 + 64 + 8 + 8 + 4 * ORIENTATIONS + 1


def features(images: np.ndarray) -> np.ndarray:
    """[n, 8, 8] ink levels → [n, FEATURES] float32."""
    x = images.astype(np.float32) / MAX_INK
    n = len(x)
    ink = x.sum(axis=(1, 2))
    shape = x / np.maximum(ink, 1e-6)[:, None, None] * 20.0
    rows, columns = x.sum(axis=2), x.sum(axis=1)
    dy, dx = np.gradient(x, axis=(1, 2))
    magnitude = np.hypot(dx, dy)
    angle = np.arctan2(dy, dx)
    bins = (((angle + np.pi) / (2 * np.pi) * ORIENTATIONS).astype(np.int64)) % ORIENTATIONS
    quadrant = (np.arange(8)[:, None] // 4) * 2 + (np.arange(8)[None, :] // 4)
    histogram = np.zeros((n, 4, ORIENTATIONS), np.float32)
    for q in range(4):
        for b in range(ORIENTATIONS):
            histogram[:, q, b] = (magnitude * ((bins == b) & (quadrant == q))).sum(axis=(1, 2))
    parts = [x, shape, rows, columns, histogram, ink[:, None]]
    return np.concatenate([p.reshape(n, -1) for p in parts], axis=1).astype(np.float32)


class DigitClassifier:
    # The public signature: preprocess takes ``image``; the pipeline takes ``features``.
    preprocess_inputs = (Tensor("image", "FP32", [-1, 8, 8]),)
    inputs = (Tensor("features", "FP32", [-1, FEATURES]),)
    outputs = (Tensor("digit", "INT64", [-1]), Tensor("probabilities", "FP32", [-1, 10]))

    def __init__(self, folder: Path, options: dict[str, Any]) -> None:
        import skops.io  # type: ignore[import-untyped]

        path = folder / options.get("weights", "model.skops")
        untrusted = skops.io.get_untrusted_types(file=path)
        if untrusted:
            raise RuntimeError(f"{path} holds types this model does not trust: {untrusted}")
        self.pipeline = skops.io.load(path)
        self.classes = np.asarray(self.pipeline.classes_, dtype=np.int64)

    def preprocess(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = inputs["image"]
        if not np.isfinite(images).all():
            raise InputError("image holds NaN or infinite values")
        if images.min(initial=0.0) < 0 or images.max(initial=0.0) > MAX_INK:
            raise InputError(f"image values are ink levels from 0 to {MAX_INK:g}")
        return {"features": features(images)}

    def predict(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probabilities = self.pipeline.predict_proba(batch["features"]).astype(np.float32)
        digit = self.classes[np.argmax(probabilities, axis=1)]
        return {"digit": digit, "probabilities": probabilities}
