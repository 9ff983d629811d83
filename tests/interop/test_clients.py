"""Unmodified PyPI clients against one real ``infership serve`` process, REST and gRPC.

tritonclient.grpc and kserve cannot share a Python process (both register protobuf package
``inference``), so every client runs as a script in its own virtualenv (built by
``make interop-venvs``) and prints what it observed as JSON; the assertions live here. The server
runs from the development virtualenv (the newest protobuf); test_shared_env.py runs it beside
tritonclient in one virtualenv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import EXAMPLE, TESTDATA, RunningServer, start_server, stop_server
from infership.app import EXAMPLE_REPOSITORY

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
CLIENTS = Path(__file__).parent / "clients"
HALF = "half"


def write_half_model(folder: Path) -> None:
    """An FP16 model, y = 2x with shape [-1, 4]: FP16 has no typed gRPC field, only raw."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 4])
    two = numpy_helper.from_array(np.array(2, dtype=np.float16), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], HALF, [x], [y], initializer=[two]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime we support
    (folder / "1").mkdir(parents=True)
    onnx.save(model, folder / "1" / "model.onnx")
    (folder / "model.yaml").write_text("runtime: onnx\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repository = tmp_path_factory.mktemp("interop") / "models"
    shutil.copytree(EXAMPLE_REPOSITORY / EXAMPLE, repository / EXAMPLE)
    write_half_model(repository / HALF)
    running = start_server(str(repository), "--model-control")
    yield running
    stop_server(running)


def run_client(venv: str, script: str, server: RunningServer) -> dict[str, Any]:
    python = ROOT / ".venv" / venv / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing; build the client virtualenvs with `make interop-venvs`")
    env = {
        **os.environ,
        "INTEROP_REST": server.url.removeprefix("http://"),
        "INTEROP_GRPC": server.grpc_address,
        "INTEROP_IMAGE": str(TESTDATA / "images" / "chelsea.jpg"),
        "INTEROP_MODEL": EXAMPLE,
        "INTEROP_HALF": HALF,
    }
    result = subprocess.run(
        [str(python), str(CLIENTS / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stderr}"
    observed: dict[str, Any] = json.loads(result.stdout)
    return observed


def assert_health_and_metadata(seen: dict[str, Any]) -> None:
    assert seen["live"] is True
    assert seen["ready"] is True
    assert seen["server_name"] == "infership"
    assert "image" in seen["model_inputs"]
    assert seen["model_ready"] is True
    assert seen["unknown_model_ready"] is False


def assert_repository(seen: dict[str, Any]) -> None:
    assert seen["repository"] == [EXAMPLE, HALF]
    assert seen["ready_after_unload"] is False
    assert seen["ready_after_load"] is True


def test_tritonclient_http_sync_and_aio(server: RunningServer) -> None:
    seen = run_client("interop-triton", "triton_http.py", server)
    sync, aio = seen["sync"], seen["aio"]
    assert_health_and_metadata(sync)
    assert sync["label"] == "Egyptian cat"  # binary BYTES in and out
    assert sync["requested_outputs"] == ["class_index"]
    assert sync["class_index"] == 285
    assert sync["fp16_json"] == [[2.0, 4.0, 6.0, 8.0]]
    assert sync["fp16_binary"] == [[2.0, 4.0, 6.0, 8.0]]
    assert sync["fp16_dtype"] == "float16"
    assert_repository(sync)
    assert sync["errors"] == {"unknown_model": "404", "bad_shape": "400", "bad_dtype": "400"}
    assert aio == {
        "live": True,
        "ready": True,
        "model_ready": True,
        "label": "Egyptian cat",
        "unknown_model": "404",
    }


def test_tritonclient_grpc(server: RunningServer) -> None:
    seen = run_client("interop-triton", "triton_grpc.py", server)
    assert_health_and_metadata(seen)
    assert seen["label"] == "Egyptian cat"
    assert seen["id"] == "r-1"
    assert seen["requested_outputs"] == ["class_index"]
    assert seen["class_index"] == 285
    assert seen["fp16_raw"] == [[2.0, 4.0, 6.0, 8.0]]
    assert seen["fp16_dtype"] == "float16"
    assert_repository(seen)
    assert seen["errors"] == {
        "unknown_model": "StatusCode.NOT_FOUND",
        "bad_shape": "StatusCode.INVALID_ARGUMENT",
        "bad_dtype": "StatusCode.INVALID_ARGUMENT",
    }
    streamed = seen["stream"]
    assert streamed["results"] == {f"s-{i}": [[2.0, 4.0, 6.0, 8.0]] for i in range(8)}
    (error,) = streamed["errors"]
    assert "'x'" in error, error
    assert "shape" in error, error


def test_kserve_rest_and_grpc_clients(server: RunningServer) -> None:
    seen = run_client("interop-kserve", "kserve_clients.py", server)
    rest, over_grpc = seen["rest"], seen["grpc"]
    assert rest["live"] is True
    assert rest["ready"] is True
    assert rest["model_ready"] is True
    assert rest["unknown_model_ready"] is False
    assert rest["label"] == "Egyptian cat"
    assert rest["json_outputs"] == ["logits"]
    assert rest["json_argmax"] == 285
    assert rest["fp16"] == [[2.0, 4.0, 6.0, 8.0]]
    assert rest["fp16_dtype"] == "float16"
    assert rest["errors"] == {"unknown_model": "404", "bad_shape": "400", "bad_dtype": "400"}

    assert over_grpc["live"] is True
    assert over_grpc["ready"] is True
    assert over_grpc["model_ready"] is True
    assert over_grpc["label"] == "Egyptian cat"  # typed bytes_contents in, raw out
    assert over_grpc["id"] == "k-1"
    assert over_grpc["requested_outputs"] == ["class_index"]
    assert over_grpc["class_index"] == 285
    assert over_grpc["fp16"] == [[2.0, 4.0, 6.0, 8.0]]
    assert over_grpc["fp16_dtype"] == "float16"
    assert over_grpc["errors"] == {
        "unknown_model": "NOT_FOUND",
        "bad_shape": "INVALID_ARGUMENT",
        "bad_dtype": "INVALID_ARGUMENT",
    }
