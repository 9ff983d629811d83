"""No request is lost when a replica is stopped or a model version is swapped, under load.

The load comes from ``infership bench``'s generator (a closed loop of kept-alive connections),
sending binary tensors to the trivial model in bench/models so that many requests are in flight
at every moment of the stop or the swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import RunningServer, free_port, start_server, stop_server
from infership.bench.loadgen import Load, Recording, run
from infership.bench.payloads import infer_path, oip_binary, parse_tensor
from infership.bench.transport import HttpTarget
from infership.repository.filesystem import file_sha256

pytestmark = pytest.mark.e2e

BENCH_MODELS = Path(__file__).parents[2] / "bench" / "models"
REQUEST = oip_binary(infer_path("add"), [parse_tensor("x:FP32:1,16")])


class RoundRobin:
    """A TCP round-robin over the backends whose readiness answers 200, polled every 0.5 s:
    what a Kubernetes Service does with its endpoints, in miniature, lag included (a stopping
    server keeps getting new connections for up to 0.5 s, so it must keep answering)."""

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self.ready = list(backends)
        self.turn = 0

    async def serve(self, port: int) -> AsyncIterator[None]:
        server = await asyncio.start_server(self._pipe, "127.0.0.1", port)
        poller = asyncio.create_task(self._poll())
        try:
            yield
        finally:
            poller.cancel()
            server.close()

    async def _poll(self) -> None:
        async with httpx.AsyncClient(timeout=0.5) as client:
            while True:
                ready = []
                for url in self.backends:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get(f"{url}/v2/health/ready")).status_code == 200:
                            ready.append(url)
                self.ready = ready
                await asyncio.sleep(0.5)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.turn += 1
        host, port = self.ready[self.turn % len(self.ready)].removeprefix("http://").split(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:  # routed to a server that has gone: the client sees a reset
            writer.close()
            return

        async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


async def load_while(target_url: str, action: asyncio.Future[None], seconds: float) -> Recording:
    recording = await run(
        HttpTarget(target_url, REQUEST, timeout_s=10),
        Load(concurrency=8, duration_s=seconds, warmup_s=0.3),
    )
    await action
    return recording


async def test_stopping_one_of_two_replicas_under_load_loses_no_request() -> None:
    servers = [start_server(str(BENCH_MODELS), "--drain-delay", "1") for _ in range(2)]
    proxy = RoundRobin([s.url for s in servers])
    port = free_port()
    try:
        async with contextlib.asynccontextmanager(proxy.serve)(port):

            async def stop_first() -> None:
                await asyncio.sleep(1.5)
                servers[0].process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(servers[0].process.wait, 30)

            recording = await load_while(
                f"http://127.0.0.1:{port}", asyncio.ensure_future(stop_first()), 5.0
            )
        assert servers[0].process.returncode == 0
        assert len(recording.latencies_s) > 200, "too little load to show anything"
        assert not recording.errors, recording.errors
    finally:
        logs = [stop_server(s) for s in servers]
    assert "draining: not ready; still serving for 1.0 s" in logs[0], logs[0]
    assert "drained and stopped in" in logs[0]


async def test_swapping_model_versions_under_load_loses_no_request(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(BENCH_MODELS / "add", repository / "add")
    server: RunningServer = start_server(str(repository), "--model-control")
    try:

        async def swap() -> None:
            await asyncio.sleep(1.5)
            shutil.copytree(repository / "add" / "1", repository / "add" / "2")
            manifest_path = repository / "add" / "model.yaml"
            manifest = yaml.safe_load(manifest_path.read_text())
            manifest["sha256"]["2/model.onnx"] = file_sha256(repository / "add/2/model.onnx")
            manifest_path.write_text(yaml.safe_dump(manifest))
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                response = await client.post("/v2/repository/models/add/load")
                assert response.status_code == 200, response.text
                assert (await client.get("/v2/models/add")).json()["versions"] == ["2"]

        recording = await load_while(server.url, asyncio.ensure_future(swap()), 4.0)
        assert len(recording.latencies_s) > 200, "too little load to show anything"
        assert not recording.errors, recording.errors
    finally:
        log = stop_server(server)
    assert "stopped add version 1" in log, log
