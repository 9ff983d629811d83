"""The short, CI version of bench/overload.py: at 3× capacity the excess is refused with 503
and the rest is served. Timings are measured by the benchmark, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]


def _overload(out: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overload.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(out.read_text())


def test_three_times_capacity_is_refused_with_503_and_the_rest_served(tmp_path: Path) -> None:
    result, data = _overload(tmp_path / "overload.json")
    if not any(s["refused_rps"] for s in data["slices"]):
        # The smoke run measures capacity for 2 s on a shared 2-core machine; once in a while
        # that measurement comes out far too low and "3×" is load the server can carry. Measure
        # again once; a server that never refuses fails both times.
        result, data = _overload(tmp_path / "overload-again.json")
    slices = data["slices"]
    assert data["offered_rps"] == pytest.approx(3 * data["capacity_rps"])
    assert sum(s["refused_rps"] for s in slices) > 0, ("3× capacity refused nothing", data)
    # The server's own timing of its refusals, read from its /metrics histogram.
    assert any(s["server_ms"]["503"] for s in slices if s["refused_rps"]), slices
    assert all(s["admitted_rps"] > 0 for s in slices), "overload starved admitted requests"
    assert all(not s["other_errors"] for s in slices), [s["other_errors"] for s in slices]
    assert "## Overload at 3× capacity" in result.stdout
