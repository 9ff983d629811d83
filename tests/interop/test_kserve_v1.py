"""kserve's unmodified REST client in its v1 mode (TF Serving's REST API) against a real
``infership serve``; the client runs in its own virtualenv, as in test_clients.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLE, TESTDATA, RunningServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
PYTHON = ROOT / ".venv" / "interop-kserve" / "bin" / "python"


def observe(server: RunningServer) -> dict[str, Any]:
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} is missing; build the client virtualenvs with `make interop-venvs`")
    env = {
        **os.environ,
        "INTEROP_REST": server.url.removeprefix("http://"),
        "INTEROP_GRPC": server.grpc_address,
        "INTEROP_IMAGE": str(TESTDATA / "images" / "chelsea.jpg"),
        "INTEROP_MODEL": EXAMPLE,
        "INTEROP_HALF": "unused",
    }
    script = Path(__file__).parent / "clients" / "kserve_v1.py"
    result = subprocess.run(
        [str(PYTHON), str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kserve_v1.py failed:\n{result.stderr}"
    observed: dict[str, Any] = json.loads(result.stdout)
    return observed


def test_kserves_v1_rest_client(example_server: RunningServer) -> None:
    seen = observe(example_server)
    assert seen["live"] is True  # GET / says {"status": "alive"}
    assert seen["model_ready"] is True
    assert seen["label"] == "Egyptian cat"
    assert seen["class_index"] == 285
    assert seen["columns"] == 285
    errors = seen["errors"]
    assert errors["unknown_model"][0] == 404
    assert errors["not_an_image"][0] == 400
    assert "image 0" in errors["not_an_image"][1]  # kserve shows our {"error"} message
    assert errors["not_base64"][0] == 400
    assert "not valid base64" in errors["not_base64"][1]
    assert seen["unknown_model_ready"] == 404
