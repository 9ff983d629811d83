"""``infership serve`` runs gRPC beside REST in one process, and stops both on SIGTERM."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import grpc
import httpx
import pytest

from conftest import free_port, start_server, stop_server
from infership.protocols.grpc._pb import pb
from infership.protocols.grpc.generated import health_pb2, health_pb2_grpc
from infership.protocols.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceStub

pytestmark = pytest.mark.e2e


def test_serve_answers_on_both_ports_and_stops_cleanly_on_sigterm() -> None:
    server = start_server()
    try:
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = GRPCInferenceServiceStub(channel)
            assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
            health = health_pb2_grpc.HealthStub(channel)
            check = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    finally:
        started = time.monotonic()
        output = stop_server(server, timeout=10)
    assert time.monotonic() - started < 5
    assert server.process.returncode == 0, output
    assert f"grpc://{server.grpc_address}" in output
    with socket.socket() as probe:  # the gRPC port is released
        probe.bind(("127.0.0.1", int(server.grpc_address.rsplit(":", 1)[1])))


def test_no_grpc_serves_rest_only() -> None:
    server = start_server("--no-grpc")
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", int(server.grpc_address.rsplit(":", 1)[1])))
    finally:
        output = stop_server(server)
    assert "grpc://" not in output


def test_a_grpc_port_in_use_stops_start_up_with_a_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [
            sys.executable,
            "-m",
            "infership",
            "serve",
            "--port",
            str(free_port()),
            "--grpc-port",
            str(port),
        ]
        result = subprocess.run(command, timeout=60, capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert f"cannot bind gRPC to 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
