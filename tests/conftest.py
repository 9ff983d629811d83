"""Shared fixtures: the example served in-process, test images, and a real server process."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import pytest
from PIL import Image

from infership.app import EXAMPLE_REPOSITORY, Application
from infership.settings import ServerSettings

TESTDATA = Path(__file__).parent / "testdata"
# Servers started by tests must not fight over gRPC's default port 8001 (tests run in parallel
# on shared machines): unless a test says otherwise, gRPC binds a free port.
os.environ.setdefault("INFERSHIP_GRPC__PORT", "0")
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


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one this test process handed out before.

    The kernel may give the same ephemeral port to two binds in a row once the first socket
    is closed, so a server asked for a REST and a gRPC port could otherwise get one port
    twice and fail to bind (seen in CI)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "infership", "serve", *args]


class RunningServer:
    def __init__(
        self, process: subprocess.Popen[str], url: str, grpc_port: int, log: IO[str]
    ) -> None:
        self.process = process
        self.url = url
        self.log = log
        """The server's stdout and stderr. A file, not a pipe: nobody reads a pipe while
        tests run, and a server blocked writing its access log to a full pipe hangs."""
        self.grpc_address = f"127.0.0.1:{grpc_port}"


def start_server(
    *args: str, timeout: float = 30.0, scheme: str = "http", **client: Any
) -> RunningServer:
    """Start ``infership serve`` in its own process on a free loopback port; wait until ready.

    ``client`` are httpx options for the readiness poll (``verify``, ``cert``, ``headers``)."""
    port = free_port()
    grpc_port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by stop_server
    process = subprocess.Popen(
        serve_command(*args, "--port", str(port), "--grpc-port", str(grpc_port)),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = _read(log)
            raise RuntimeError(f"server exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1, **client).status_code == 200:
                return RunningServer(process, url, grpc_port, log)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("server did not become ready in time")


def stop_server(server: RunningServer, timeout: float = 15.0) -> str:
    """SIGTERM the server and return everything it printed; fail the test if it is still
    running ``timeout`` seconds later (it is killed then)."""
    server.process.terminate()
    try:
        server.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        pytest.fail(
            f"the server did not stop within {timeout:g} s of SIGTERM:\n{_read(server.log)}"
        )
    output = _read(server.log)
    server.log.close()
    return output


def _read(log: IO[str]) -> str:
    log.seek(0)
    return log.read()


@pytest.fixture(scope="session")
def example_server() -> Iterator[RunningServer]:
    """The bundled example served by a real ``infership serve`` process on a loopback socket."""
    server = start_server()
    yield server
    stop_server(server)
