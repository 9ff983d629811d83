"""Runs ``tensorflow_jobs.py`` once per test session in .venv/import-tensorflow, TensorFlow's own
virtualenv (built with ``pip install -e . -r tests/importing/requirements-tensorflow.txt``), and
hands its output folder to the TensorFlow and Keras tests, which serve what it imported.

Outside CI a missing virtualenv skips those tests; in CI (``INFERSHIP_CI=1``) it fails them.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .conftest import virtualenv_python

JOBS = Path(__file__).with_name("tensorflow_jobs.py")
TIMEOUT_S = 600

_ran: dict[str, Path | str] = {}


def tensorflow_results() -> Path:
    """The jobs' output folder; the jobs run on the first call (a failure fails every caller
    with the jobs' output, without running them again)."""
    python = virtualenv_python("tensorflow")
    if "out" not in _ran:
        out = Path(tempfile.mkdtemp(prefix="infership-tensorflow-"))
        atexit.register(shutil.rmtree, out, ignore_errors=True)
        done = subprocess.run(
            [str(python), str(JOBS), str(out)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        _ran["out"] = out if done.returncode == 0 else (done.stdout + done.stderr)[-6000:]
    result = _ran["out"]
    if isinstance(result, str):
        pytest.fail(f"{JOBS.name} failed in {python.parent.parent}:\n{result}")
    return result
