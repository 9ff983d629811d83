"""Red-team regressions on a real server over sockets: classes of hostile input beyond issue 16's
list that current main got wrong, each fixed at its root.

- a client that never reads its (large) response held the response's memory and its
  connection slot for as long as it kept the socket open (connection.check_sending);
- requests pipelined on one connection were queued without bound (connection._feed);
- a repeated header was read as its last value by the infer route and its first by the others
  (infer.request_headers);
- a JSON boolean among numbers passed for 1 or 0 (tensors.tensor_from_list).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import RunningServer, start_server, stop_server

pytestmark = pytest.mark.e2e

BENCH_MODELS = Path(__file__).parents[2] / "bench" / "models"
ROW = [1.0] * 16


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_server(str(BENCH_MODELS))
    yield running
    stop_server(running)


def _port(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def _rss_mb(server: RunningServer) -> float:
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _infer_body(**extra: object) -> bytes:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": ROW}], **extra}
    return json.dumps(doc).encode()


def _ordinary_request_s(server: RunningServer) -> float:
    started = time.monotonic()
    answer = httpx.post(f"{server.url}/v2/models/add/infer", content=_infer_body(), timeout=10)
    assert answer.status_code == 200
    assert answer.json()["outputs"][0]["data"] == [2.0] * 16
    return time.monotonic() - started


def _non_reader(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little
    sock.connect(("127.0.0.1", port))
    return sock


def test_a_client_that_never_reads_its_response_is_cut_off(server: RunningServer) -> None:
    # The infer route echoes the request id: a 16 MB id makes a 16 MB response.
    body = _infer_body(id="a" * (16 * 1024 * 1024))
    head = b"POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    idle = _rss_mb(server)
    sockets = [_non_reader(_port(server)) for _ in range(4)]
    try:
        for sock in sockets:
            sock.sendall(head % len(body) + body)
        sent = time.monotonic()
        time.sleep(1)
        held = _rss_mb(server)
        assert held > idle + 40  # 4 x 16 MB of responses wait in the server's buffers
        assert _ordinary_request_s(server) < 1
        # send_window_s (10 s) after the first watchdog tick that saw the bytes waiting,
        # then the next tick (at most 1 s each), and a margin.
        time.sleep(13.5 - (time.monotonic() - sent))
        assert _rss_mb(server) < held - 40, "unread responses still held"
        for sock in sockets:  # each was aborted before its response was all sent
            assert _read_until_closed(sock) < len(body)
    finally:
        for sock in sockets:
            sock.close()
    assert _ordinary_request_s(server) < 1


def _read_until_closed(sock: socket.socket) -> int:
    """Bytes read before the connection ended (reset or EOF)."""
    sock.settimeout(5)
    size = 0
    try:
        while chunk := sock.recv(1 << 20):
            size += len(chunk)
    except ConnectionResetError:
        pass
    return size


def test_pipelined_requests_are_bounded_and_all_answered(server: RunningServer) -> None:
    port = _port(server)
    # A flood of pipelined requests whose answers are never read: the server parses a few
    # ahead and leaves the rest in the socket, instead of queuing every one.
    idle = _rss_mb(server)
    flood = _non_reader(port)
    flood.settimeout(0.5)
    request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n" * 256
    sent, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < 5:
            sent += flood.send(request)
    except TimeoutError:
        pass  # the server stopped reading: what it was sent waits in the kernel
    try:
        assert sent > 1_000_000
        assert _ordinary_request_s(server) < 1
        assert _rss_mb(server) < idle + 50
    finally:
        flood.close()
    # Pipelining itself still works: every request answered, in order.
    body = _infer_body()
    infer = b"POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(
        body
    )
    live = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall((infer + body + live) * 300 + last)
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
    assert received.count(b"HTTP/1.1 200 ") == 601
    assert received.count(b'"data":[2.0,') == 300
    assert received.rstrip().endswith(b'{"ready":true}')


def _raw(server: RunningServer, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    request = (
        b"POST /v2/models/add/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (len(body), lines, body)
    )
    with socket.create_connection(("127.0.0.1", _port(server)), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
    return received


def test_a_repeated_header_is_not_read_as_one_of_its_values(server: RunningServer) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, 16],
                    "parameters": {"binary_data_size": 64},
                }
            ]
        }
    ).encode()
    body = header + b"\x00\x00\x80\x3f" * 16
    length = b"%d" % len(header)
    single = _raw(server, [(b"Inference-Header-Content-Length", length)], body)
    assert single.startswith(b"HTTP/1.1 200 ")
    for values in ([length, b"2"], [b"2", length], [length, length]):
        answer = _raw(server, [(b"Inference-Header-Content-Length", v) for v in values], body)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"Inference-Header-Content-Length must be" in answer


@pytest.mark.parametrize(
    "data",
    [
        [True, *ROW[1:]],
        [True, 1.5, *ROW[2:]],
        [[False, *ROW[1:]]],
        [*ROW[:15], False],
    ],
)
def test_a_json_boolean_among_numbers_is_refused(server: RunningServer, data: list[object]) -> None:
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": data}]}
    ).encode()
    answer = httpx.post(f"{server.url}/v2/models/add/infer", content=body, timeout=10)
    assert answer.status_code == 400
    assert "FP32 data must be JSON numbers" in answer.json()["error"]
    # A string that merely contains "true" does not trouble a numeric tensor.
    fine = httpx.post(
        f"{server.url}/v2/models/add/infer", content=_infer_body(id="true false"), timeout=10
    )
    assert fine.status_code == 200
