"""bench/python_models.py --smoke: every part runs and the printed tables have every row.

No timing is asserted. LitServe runs only where ``bench/peers/setup.sh litserve`` made its
virtualenv; elsewhere its rows must still be there, saying why they did not run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import python_models  # noqa: E402 - bench/ is not a package


def test_smoke_prints_every_row(tmp_path: Path) -> None:
    out = tmp_path / "python-models.json"
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "python_models.py"), "--smoke", "--out", str(out),
         "--append", "--benchmarks-md", str(md)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    expected = {
        "1": ([m.label for m in python_models.PART1_OURS]
              + [c.label for c in python_models.PART1_LIT], (1, 8, 32)),
        "2": ([m.label for m in python_models.PART2], (1, 32)),
        "3": ([m.label for m in python_models.PART3], (8, 32)),
    }  # fmt: skip
    lines = text.splitlines()
    for labels, loads in expected.values():
        for label in labels:
            for c in loads:
                assert any(line.startswith(f"| {label} | c={c} |") for line in lines), (label, c)
    for heading in ("### 1.", "### 2.", "### 3.", "### Targets from this run"):
        assert heading in text
    assert "GIL-holding preprocess, c=32: workers 2 / workers 1" in text
    assert "python, thread vs ONNX" in text
    data = json.loads(out.read_text())
    for part, (labels, loads) in expected.items():
        entries = {e["label"]: e for e in data["parts"][part]}
        assert set(entries) == set(labels)
        for label, entry in entries.items():
            if entry["why_not"] is not None:  # LitServe without its virtualenv
                assert label.startswith("LitServe"), entry
                continue
            for c in loads:  # measured (a 0.2 s smoke slice may end before any answer)
                assert entry["medians"][str(c)]["errors"] == 0, (label, c)
    appended = md.read_text()
    assert appended.startswith("# Benchmarks\n")
    assert "## Python models (issue 17)" in appended
