"""Sample inputs for the accuracy check and calibration, prepared as the server prepares them.

An image model takes a folder of images, a text model a file of texts (one per line), through
the model's own ``preprocess`` settings; any other model gets seeded random tensors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infership.errors import ConfigError
from infership.processing.image import FORMATS
from infership.repository.manifest import ModelManifest
from infership.types import Array, TensorSpec, numpy_dtype

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
RANDOM_SAMPLES = 8
_FREE_DIMENSION = 16  # what a -1 (any size) dimension becomes in a random sample


def sample_feeds(
    manifest: ModelManifest,
    version_dir: Path,
    inputs: tuple[TensorSpec, ...],
    samples: Path | None,
) -> list[dict[str, Array]]:
    """One single-row feed per sample, in file order. Raises ConfigError when ``samples`` does not
    suit the model (no images in the folder, no texts in the file)."""
    image, text = manifest.preprocess.image, manifest.preprocess.text
    if samples is not None and image is not None:
        return _images(samples, manifest)
    if samples is not None and text is not None:
        return _texts(samples, manifest, version_dir)
    if samples is not None:
        raise ConfigError(f"{samples}: the model has no image or text pre-processing to read it")
    return _random(inputs)


def _images(folder: Path, manifest: ModelManifest) -> list[dict[str, Array]]:
    from infership.processing.image import ImagePreprocessor

    assert manifest.preprocess.image is not None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"{folder}: no images ({', '.join(FORMATS)}) to use as samples")
    pre = ImagePreprocessor(manifest.preprocess.image, max_pixels=100_000_000)
    name = manifest.preprocess.image.input
    return [{name: pre.one(p.read_bytes(), index=i)[None]} for i, p in enumerate(files)]


def _texts(path: Path, manifest: ModelManifest, version_dir: Path) -> list[dict[str, Array]]:
    from infership.processing.text import TextPreprocessor

    config = manifest.preprocess.text
    assert config is not None
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"{path}: no texts (one per line) to use as samples")
    pre = TextPreprocessor(config, version_dir / config.tokenizer)
    return [pre.batch([line]) for line in lines]


def _random(inputs: tuple[TensorSpec, ...]) -> list[dict[str, Array]]:
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(RANDOM_SAMPLES):
        feed: dict[str, Array] = {}
        for spec in inputs:
            shape = (1, *(d if d > 0 else _FREE_DIMENSION for d in spec.shape[1:]))
            if spec.datatype in ("FP16", "FP32", "FP64"):
                feed[spec.name] = rng.standard_normal(shape).astype(numpy_dtype(spec.datatype))
            elif spec.datatype == "BYTES":
                raise ConfigError(f"input {spec.name!r} is BYTES; give samples to prepare it")
            else:
                feed[spec.name] = np.ones(shape, dtype=numpy_dtype(spec.datatype))
        feeds.append(feed)
    return feeds
