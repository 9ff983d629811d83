"""Python models on a real ``infership serve``: tritonclient against ``runtime: python``, a code
change hot-swapped under load without a failed request, and a broken class stopping start-up
with exit code 2."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from conftest import RunningServer, serve_command, start_server, stop_server
from infership.bench.loadgen import Load, run
from infership.bench.payloads import infer_path, oip_binary, parse_tensor
from infership.bench.transport import HttpTarget

pytestmark = pytest.mark.e2e

CODE = """
import numpy as np
from infership.python import Tensor

OFFSET = {offset}

class Model:
    inputs = [Tensor("x", "FP32", [-1, 16])]
    outputs = [Tensor("y", "FP32", [-1, 16])]

    def __init__(self, folder, options):
        pass

    def predict(self, batch):
        return {{"y": batch["x"] + np.float32(OFFSET)}}
"""
YAML = "runtime: python\npython: {execution: process, workers: 2}\nbatching: {max_batch_size: 8}\n"


def write_version(root: Path, version: int, offset: int, yaml: str = YAML) -> None:
    folder = root / "py" / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(textwrap.dedent(CODE.format(offset=offset)))
    (root / "py" / "model.yaml").write_text(yaml)


def test_tritonclient_gets_the_python_models_answers(tmp_path: Path) -> None:
    write_version(tmp_path, 1, 5)
    server = start_server(str(tmp_path))
    try:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"))
        x = triton.InferInput("x", [3, 16], "FP32")
        data = np.arange(48, dtype=np.float32).reshape(3, 16)
        x.set_data_from_numpy(data, binary_data=True)
        result = client.infer("py", [x])
        np.testing.assert_array_equal(result.as_numpy("y"), data + 5)
        assert client.get_model_metadata("py")["platform"] == "python"
    finally:
        stop_server(server)


async def test_a_code_change_swapped_in_under_load_loses_no_request(tmp_path: Path) -> None:
    write_version(tmp_path, 1, 1)
    server: RunningServer = start_server(str(tmp_path), "--model-control")
    request = oip_binary(infer_path("py"), [parse_tensor("x:FP32:1,16")])
    try:

        async def swap() -> None:
            await asyncio.sleep(1.5)
            write_version(tmp_path, 2, 100)
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                response = await client.post("/v2/repository/models/py/load")
                assert response.status_code == 200, response.text
                body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16],
                                    "data": [0.0] * 16}]}  # fmt: skip
                answer = (await client.post("/v2/models/py/infer", json=body)).json()
                assert answer["model_version"] == "2"
                assert answer["outputs"][0]["data"] == [100.0] * 16  # the new code computes

        action = asyncio.ensure_future(swap())
        recording = await run(
            HttpTarget(server.url, request, timeout_s=30),
            Load(concurrency=8, duration_s=5.0, warmup_s=0.3),
        )
        await action
        assert len(recording.latencies_s) > 200, "too little load to show anything"
        assert not recording.errors, recording.errors
    finally:
        log = stop_server(server)
    assert "stopped py version 1" in log, log


def test_a_class_that_fails_to_load_stops_start_up_with_exit_code_2(tmp_path: Path) -> None:
    write_version(tmp_path, 1, 1)
    (tmp_path / "py" / "1" / "model.py").write_text("raise ImportError('no such weights')\n")
    result = subprocess.run(
        [*serve_command(str(tmp_path)), "--port", "0", "--no-grpc"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "model 'py' version 1" in result.stderr
    assert "ImportError: no such weights" in result.stderr


def test_no_worker_process_outlives_the_server(tmp_path: Path) -> None:
    write_version(tmp_path, 1, 1)
    server = start_server(str(tmp_path))
    workers = _workers_of(server.process.pid)
    assert len(workers) == 2
    stop_server(server)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def _workers_of(parent: int) -> list[int]:
    # Spawned by whichever of the server's threads loaded the model: ask every thread.
    tasks = Path(f"/proc/{parent}/task").iterdir()
    children = [pid for task in tasks for pid in (task / "children").read_text().split()]
    return [
        int(pid)
        for pid in children
        if b"infership.usercode.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
