"""infership and tritonclient[all] installed together in ONE virtualenv, as users install them.

``.venv/interop-shared`` is built by ``make interop-venvs`` with
``pip install -e . -r requirements-shared.txt`` (tritonclient[all], pinned): tritonclient needs
protobuf < 7, so this is where our stubs meet a protobuf older than the development one. A real
``infership serve`` runs from that virtualenv, and tritonclient's HTTP and gRPC clients, from the
same virtualenv, talk to it. (They still run in a process of their own: tritonclient.grpc and our
generated code both define protobuf package ``inference``.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_clients import (
    HALF,
    assert_health_and_metadata,
    assert_repository,
    run_client,
    write_half_model,
)

import conftest
from conftest import EXAMPLE, RunningServer, start_server, stop_server
from infership.app import EXAMPLE_REPOSITORY

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
SHARED = "interop-shared"
PYTHON = ROOT / ".venv" / SHARED / "bin" / "python"


def shared_python() -> Path:
    if not PYTHON.exists():
        pytest.fail(f"{PYTHON} is missing; build the client virtualenvs with `make interop-venvs`")
    return PYTHON


def installed(*names: str) -> dict[str, str]:
    """Versions of the distributions ``names`` in the shared virtualenv."""
    code = (
        "import importlib.metadata as m, json, sys;"
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    result = subprocess.run(
        [str(shared_python()), "-c", code, *names],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    versions: dict[str, str] = json.loads(result.stdout)
    return versions


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[RunningServer]:
    """``infership serve`` run by the shared virtualenv's interpreter."""
    python = shared_python()
    repository = tmp_path_factory.mktemp("shared") / "models"
    shutil.copytree(EXAMPLE_REPOSITORY / EXAMPLE, repository / EXAMPLE)
    write_half_model(repository / HALF)
    monkeypatch_module.setattr(
        conftest, "serve_command", lambda *args: [str(python), "-m", "infership", "serve", *args]
    )
    running = start_server(str(repository), "--model-control", timeout=60)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_pip_kept_the_current_tritonclient_beside_us() -> None:
    """pip resolved infership with the pinned tritonclient (not a 2023 fallback), and so with
    the protobuf < 7 that tritonclient demands."""
    versions = installed("infership", "tritonclient", "protobuf", "grpcio")
    assert versions["tritonclient"] == "2.73.0"
    assert int(versions["protobuf"].split(".")[0]) < 7, versions


def test_the_server_runs_from_the_shared_env(server: RunningServer) -> None:
    code = (
        "import google.protobuf, infership.protocols.grpc.server; print(google.protobuf.__file__)"
    )
    result = subprocess.run(
        [str(shared_python()), "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert str(ROOT / ".venv" / SHARED) in result.stdout  # not the development protobuf


def test_tritonclient_http_from_the_shared_env(server: RunningServer) -> None:
    seen = run_client(SHARED, "triton_http.py", server)
    sync = seen["sync"]
    assert_health_and_metadata(sync)
    assert sync["label"] == "Egyptian cat"
    assert sync["class_index"] == 285
    assert sync["fp16_binary"] == [[2.0, 4.0, 6.0, 8.0]]
    assert_repository(sync)
    assert sync["errors"] == {"unknown_model": "404", "bad_shape": "400", "bad_dtype": "400"}
    assert seen["aio"]["label"] == "Egyptian cat"


def test_tritonclient_grpc_from_the_shared_env(server: RunningServer) -> None:
    seen = run_client(SHARED, "triton_grpc.py", server)
    assert_health_and_metadata(seen)
    assert seen["label"] == "Egyptian cat"
    assert seen["id"] == "r-1"
    assert seen["class_index"] == 285
    assert seen["fp16_raw"] == [[2.0, 4.0, 6.0, 8.0]]
    assert_repository(seen)
    assert seen["errors"] == {
        "unknown_model": "StatusCode.NOT_FOUND",
        "bad_shape": "StatusCode.INVALID_ARGUMENT",
        "bad_dtype": "StatusCode.INVALID_ARGUMENT",
    }
