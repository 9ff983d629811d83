"""The bundled example is exactly what scripts/export_example.py recorded, checked without src code.

Digests are computed with hashlib and the model is run with onnxruntime directly, so a broken
server cannot hide a broken (or swapped) example, and vice versa.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from conftest import reference_preprocess

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).parents[2] / "src/infership/examples/models/efficientnet-lite0"
IMAGES = Path(__file__).parents[1] / "testdata/images"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((EXAMPLE / "model.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("relative", ["1/model.onnx", "labels.txt"])
def test_recorded_sha256_matches_file(manifest: dict, relative: str) -> None:
    actual = hashlib.sha256((EXAMPLE / relative).read_bytes()).hexdigest()
    assert manifest["sha256"][relative] == actual


def test_manifest_records_digests_for_exactly_the_model_and_labels(manifest: dict) -> None:
    assert set(manifest["sha256"]) == {"1/model.onnx", "labels.txt"}


def test_labels_are_imagenet_1k() -> None:
    labels = (EXAMPLE / "labels.txt").read_text(encoding="utf-8").splitlines()
    assert len(labels) == 1000
    assert labels[285] == "Egyptian cat"
    assert labels[967] == "espresso"


@pytest.mark.parametrize(("image", "expected"), [("chelsea.jpg", 285), ("coffee.jpg", 967)])
def test_onnxruntime_top1(image: str, expected: int) -> None:
    session = ort.InferenceSession(
        str(EXAMPLE / "1/model.onnx"), providers=["CPUExecutionProvider"]
    )
    (model_input,) = session.get_inputs()
    assert model_input.name == "input"
    assert model_input.shape[1:] == [3, 224, 224]
    (logits,) = session.run(
        ["logits"], {"input": reference_preprocess((IMAGES / image).read_bytes())}
    )
    assert logits.shape == (1, 1000)
    assert int(np.argmax(logits[0])) == expected
