"""Dynamic int8 quantisation of the sentence-embedding example keeps its embeddings."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infership.optimize import optimize

pytestmark = pytest.mark.e2e  # exports and quantises a 90 MB model: some seconds

REPO_ROOT = Path(__file__).resolve().parents[2]
SENTENCES = Path(__file__).parent / "sentences.txt"


def test_dynamic_int8_embeddings_stay_within_the_cosine_gate(tmp_path: Path) -> None:
    script = REPO_ROOT / "scripts" / "export_embeddings.py"
    examples = REPO_ROOT / "build" / "examples"
    subprocess.run([sys.executable, str(script), "--out", str(examples)], check=True)
    model = shutil.copytree(examples / "all-minilm-l6-v2", tmp_path / "all-minilm-l6-v2")
    report = optimize(model, "dynamic", samples=SENTENCES, seconds=1.0)
    assert report.accuracy.samples == 12
    assert report.accuracy.min_cosine >= 0.99
    assert report.optimized_bytes < 0.3 * report.original_bytes
    # The tokenizer travels with the version, and both are recorded in model.yaml.
    assert (model / "2" / "tokenizer.json").is_file()
    assert {"2/model.onnx", "2/tokenizer.json"} <= set(report_digests(model))


def report_digests(model: Path) -> list[str]:
    from infership.repository.manifest import load_manifest

    return list(load_manifest(model / "model.yaml").sha256)
