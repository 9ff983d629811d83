"""Dynamic int8 quantisation of the sentence-embedding example, held to the cosine gate.

How close int8 embeddings come to the FP32 ones is measured, not promised: it depends on the
quantiser and on the CPU (docs/optimize.md). What these tests hold fixed is ours: the gate
compares the file that would be written, on every sample, and either the version is written and
meets the gate or nothing is written and the error says by how much it missed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from infership.errors import AccuracyCheckFailed
from infership.optimize import Gates, OptimizeReport, optimize
from infership.optimize.samples import sample_feeds
from infership.optimize.transform import transform
from infership.repository.manifest import load_manifest
from infership.runtimes.onnx import OnnxRuntime
from infership.types import Array

pytestmark = pytest.mark.e2e  # exports and quantises a 90 MB model: some seconds per test

REPO_ROOT = Path(__file__).resolve().parents[2]
SENTENCES = Path(__file__).parent / "sentences.txt"
NAME = "all-minilm-l6-v2"


@pytest.fixture(scope="module")
def exported() -> Path:
    script = REPO_ROOT / "scripts" / "export_embeddings.py"
    examples = REPO_ROOT / "build" / "examples"
    subprocess.run([sys.executable, str(script), "--out", str(examples)], check=True)
    return examples / NAME


@pytest.fixture(scope="module")
def cosines(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Array:
    """Each sentence's cosine between the FP32 and the int8 embedding, computed here, apart
    from optimize: the rewrite on its own, then both models run on the sentences."""
    candidate = tmp_path_factory.mktemp("int8") / "model.onnx"
    transform(exported / "1" / "model.onnx", candidate, "dynamic")
    return _cosines_of(candidate, exported)


@pytest.fixture
def model(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / NAME))


def test_the_default_gate_either_writes_a_version_that_meets_it_or_nothing(model: Path) -> None:
    gate = Gates().min_cosine
    before = _contents(model)
    report: OptimizeReport | None = None
    try:
        report = optimize(model, "dynamic", samples=SENTENCES, seconds=0.2)
    except AccuracyCheckFailed as exc:
        refusal = str(exc)
    if report is None:
        assert _reported_cosine(refusal) < gate
        assert refusal.endswith(f" below the gate of {gate}; nothing written")
        assert _contents(model) == before
    else:
        assert report.accuracy.samples == 12
        assert report.accuracy.min_cosine >= gate
        _assert_written(model, report.new_version)


def test_a_gate_met_by_every_sentence_writes_the_version_it_measured(
    model: Path, cosines: Array
) -> None:
    lowest = float(cosines.min())
    report = optimize(
        model, "dynamic", samples=SENTENCES, gates=Gates(min_cosine=lowest - 1e-4), seconds=0.2
    )
    # The gate judged the file that was written, on every sentence, by its lowest cosine.
    assert report.accuracy.samples == len(cosines) == 12
    assert report.accuracy.min_cosine == pytest.approx(lowest, abs=1e-6)
    assert float(_cosines_of(model / "2" / "model.onnx", model).min()) == pytest.approx(
        lowest, abs=1e-6
    )
    assert report.optimized_bytes < 0.3 * report.original_bytes
    _assert_written(model, 2)


def test_a_gate_above_one_sentence_writes_nothing_and_says_by_how_much(
    model: Path, cosines: Array
) -> None:
    # Just above the lowest sentence and below all the others (and their mean): only a gate
    # that takes the lowest cosine refuses this.
    lowest, second = np.sort(cosines)[:2]
    gate = round(float(lowest) + min(1e-4, float(second - lowest) / 2), 9)
    before = _contents(model)
    with pytest.raises(AccuracyCheckFailed) as failed:
        optimize(model, "dynamic", samples=SENTENCES, gates=Gates(min_cosine=gate), seconds=0.2)
    message = str(failed.value)
    assert _reported_cosine(message) == pytest.approx(lowest, abs=1e-4)
    shortfall = re.search(r", ([0-9.]+) below the gate of ([0-9.]+); nothing written$", message)
    assert shortfall is not None, message
    assert float(shortfall[1]) == pytest.approx(gate - lowest, abs=1e-4)
    assert float(shortfall[2]) == gate
    assert _contents(model) == before


def _assert_written(model: Path, version: int) -> None:
    # The tokenizer travels with the version, and both files are recorded in model.yaml.
    assert (model / str(version) / "tokenizer.json").is_file()
    digests = set(load_manifest(model / "model.yaml").sha256)
    assert {f"{version}/model.onnx", f"{version}/tokenizer.json"} <= digests


def _contents(model: Path) -> dict[str, bytes]:
    """Every file under the model folder, hidden ones included, with its bytes."""
    return {str(p.relative_to(model)): p.read_bytes() for p in model.rglob("*") if p.is_file()}


def _reported_cosine(message: str) -> float:
    found = re.search(r"lowest cosine similarity to the original is ([0-9.]+),", message)
    assert found is not None, message
    return float(found[1])


def _cosines_of(candidate: Path, model: Path) -> Array:
    before = _embed(model / "1" / "model.onnx", model)
    after = _embed(candidate, model)
    norms = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
    result: Array = np.sum(before * after, axis=1) / norms
    return result


def _embed(path: Path, model: Path) -> npt.NDArray[np.float64]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    manifest = load_manifest(model / "model.yaml")
    inputs = OnnxRuntime(session, path).inputs
    feeds = sample_feeds(manifest, model / "1", inputs, SENTENCES)
    rows = [session.run(None, feed)[0] for feed in feeds]
    return np.concatenate(rows).astype(np.float64)
