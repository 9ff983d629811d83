"""Shared by the importer tests: serve an imported repository for real and ask it with the
unmodified tritonclient, as a user would after ``save_model``/``infership import``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from conftest import start_server, stop_server
from infership.types import datatype_of


def served_outputs(
    repository: Path, model: str, inputs: dict[str, np.ndarray], outputs: list[str]
) -> dict[str, np.ndarray]:
    """Start ``infership serve REPOSITORY`` on a loopback port, send ``inputs`` in one binary
    request with tritonclient.http, and return the ``outputs`` it answers. The server is
    stopped before returning; a server that fails to start fails the test with its log."""
    server = start_server(str(repository))
    try:
        client = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        tensors = []
        for name, value in inputs.items():
            array = np.asarray(value)
            tensor = httpclient.InferInput(name, list(array.shape), datatype_of(array))
            tensor.set_data_from_numpy(array, binary_data=True)
            tensors.append(tensor)
        wanted = [httpclient.InferRequestedOutput(n, binary_data=True) for n in outputs]
        result = client.infer(model, tensors, outputs=wanted)
        return {name: result.as_numpy(name) for name in outputs}
    finally:
        stop_server(server)
