"""The example classifier served through the PyTorch runtime (.pt2 from the same weights) answers
as the ONNX example does, over the same REST calls."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import TESTDATA, RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "build" / "examples"
MODEL = "efficientnet-lite0-torch"
IMAGES = sorted((TESTDATA / "images").glob("*.jpg"))


@pytest.fixture(scope="module")
def torch_server() -> Iterator[RunningServer]:
    script = REPO_ROOT / "scripts" / "export_torch_example.py"
    subprocess.run([sys.executable, str(script), "--out", str(EXAMPLES)], check=True)
    running = start_server(str(EXAMPLES), "--model", MODEL, "--no-grpc", timeout=120)
    yield running
    stop_server(running)


def predict(url: str, model: str) -> list[dict[str, object]]:
    files = [("img", (p.name, p.read_bytes(), "image/jpeg")) for p in IMAGES]
    response = httpx.post(f"{url}/v2/models/{model}/predict", files=files, timeout=60)
    assert response.status_code == 200, response.text
    predictions: list[dict[str, object]] = response.json()["predictions"]
    return predictions


def test_metadata_names_the_pytorch_platform(torch_server: RunningServer) -> None:
    metadata = httpx.get(f"{torch_server.url}/v2/models/{MODEL}").json()
    assert metadata["platform"] == "pytorch_export"
    assert metadata["inputs"][0] == {"name": "image", "datatype": "BYTES", "shape": [-1]}


def test_top5_through_torch_equals_top5_through_onnx(
    torch_server: RunningServer, example_server: RunningServer
) -> None:
    through_torch = predict(torch_server.url, MODEL)
    through_onnx = predict(example_server.url, "efficientnet-lite0")
    for t, o in zip(through_torch, through_onnx, strict=True):
        assert [c["class_index"] for c in t["top_k"]] == [c["class_index"] for c in o["top_k"]]  # type: ignore[index]
        for ct, co in zip(t["top_k"], o["top_k"], strict=True):  # type: ignore[call-overload]
            assert ct["probability"] == pytest.approx(co["probability"], abs=1e-3)
    assert [p["top_k"][0]["label"] for p in through_torch] == ["Egyptian cat", "espresso"]  # type: ignore[index]
