"""Shared fixtures: the example served in-process, test images, and a real server process."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from infership.app import EXAMPLE_REPOSITORY, Application
from infership.settings import ServerSettings

TESTDATA = Path(__file__).parent / "testdata"
EXAMPLE = "efficientnet-lite0"


def reference_preprocess(jpeg: bytes) -> np.ndarray:
    """The example's documented preprocessing, written independently of the server: Pillow RGB,
    224×224 bilinear, [0, 1], (x − 0.5) / 0.5, NCHW float32 [1, 3, 224, 224]."""
    with Image.open(io.BytesIO(jpeg)) as image:
        rgb = image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    pixels = (np.asarray(rgb, dtype=np.float32) / 255 - 0.5) / 0.5
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


@pytest.fixture(scope="session")
def chelsea() -> bytes:
    """A 451x300 JPEG of a cat; the example model's top-1 is 285, 'Egyptian cat'."""
    return (TESTDATA / "images" / "chelsea.jpg").read_bytes()


@pytest.fixture(scope="session")
def coffee() -> bytes:
    """A JPEG of an espresso cup; top-1 is 967, 'espresso'."""
    return (TESTDATA / "images" / "coffee.jpg").read_bytes()


@pytest.fixture(scope="session")
async def example_app() -> AsyncIterator[Application]:
    """The bundled example, loaded and warmed once for the whole session, in-process."""
    settings = ServerSettings(
        model_control=True,
        http={"max_body_bytes": 8 * 1024 * 1024},
        limits={"max_image_pixels": 4_000_000},
    )
    app = Application(settings)
    app.check()
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def client(example_app: Application) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the example app in-process (no socket)."""
    transport = httpx.ASGITransport(app=example_app.rest)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A writable copy of the example repository, for tests that break or change it."""
    target = tmp_path / "models"
    shutil.copytree(EXAMPLE_REPOSITORY, target)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "infership", "serve", *args]


class RunningServer:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url


def start_server(*args: str, timeout: float = 30.0) -> RunningServer:
    """Start ``infership serve`` in its own process on a free loopback port; wait until ready."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        serve_command(*args, "--port", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"server exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return RunningServer(process, url)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not become ready in time")


def stop_server(server: RunningServer) -> str:
    server.process.terminate()
    try:
        out, _ = server.process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        out, _ = server.process.communicate()
    return out


@pytest.fixture(scope="session")
def example_server() -> Iterator[RunningServer]:
    """The bundled example served by a real ``infership serve`` process on a loopback socket."""
    server = start_server()
    yield server
    stop_server(server)
