"""Shared by the importer tests: serve an imported repository for real and ask it with the
unmodified tritonclient, as a user would after ``save_model``/``infership import``; and find a
framework or a framework's own virtualenv, which CI must have and a local run may lack."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import start_server, stop_server
from infership.types import datatype_of

ROOT = Path(__file__).parents[2]


def missing(message: str) -> NoReturn:
    """A framework or virtualenv is missing: a skip locally; in CI (INFERSHIP_CI=1), where
    every one is installed, a failure."""
    if os.environ.get("INFERSHIP_CI"):
        pytest.fail(message)
    pytest.skip(message)


def require(module: str) -> ModuleType:
    """The framework, or a skip locally; in CI (INFERSHIP_CI=1) a missing one fails."""
    if os.environ.get("INFERSHIP_CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


def virtualenv_python(name: str) -> Path:
    """The interpreter of ``.venv/import-NAME``, the virtualenv of a framework that cannot be
    installed beside ``.venv``'s own packages; a missing one is ``missing``."""
    python = ROOT / ".venv" / f"import-{name}" / "bin" / "python"
    if not python.exists():
        missing(
            f"{python} is missing: python -m venv .venv/import-{name} && "
            f".venv/import-{name}/bin/pip install -e . "
            f"-r tests/importing/requirements-{name}.txt"
        )
    return python


def served_outputs(
    repository: Path, model: str, inputs: dict[str, np.ndarray], outputs: list[str]
) -> dict[str, np.ndarray]:
    """Start ``infership serve REPOSITORY`` on a loopback port, send ``inputs`` in one binary
    request with tritonclient.http, and return the ``outputs`` it answers. The server is
    stopped before returning; a server that fails to start fails the test with its log."""
    server = start_server(str(repository))
    try:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        return ask(client, model, inputs, outputs)
    finally:
        stop_server(server)


def ask(
    client: Any, model: str, inputs: dict[str, np.ndarray], outputs: list[str]
) -> dict[str, np.ndarray]:
    """One binary request with a tritonclient.http client; the ``outputs`` it answers."""
    tensors = []
    for name, value in inputs.items():
        array = np.asarray(value)
        tensor = httpclient.InferInput(name, list(array.shape), datatype_of(array))
        tensor.set_data_from_numpy(array, binary_data=True)
        tensors.append(tensor)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=True) for n in outputs]
    result = client.infer(model, tensors, outputs=wanted)
    return {name: result.as_numpy(name) for name in outputs}
