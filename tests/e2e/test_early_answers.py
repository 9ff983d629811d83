"""Answers sent before the request body was read (refusals, unknown models) reach the client
even when the connection closes right after, instead of a TCP reset."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest

from conftest import RunningServer

pytestmark = pytest.mark.e2e

BODY = b"x" * (4 * 1024 * 1024)  # far more than the socket buffers hold


def post_whole_body(server: RunningServer, path: str, *, close: bool) -> bytes:
    """Send the request and its whole body, as a plain client does, then read the answer."""
    url = urlsplit(server.url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        + ("Connection: close\r\n" if close else "")
        + f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head + BODY)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


@pytest.mark.parametrize("close", [True, False], ids=["connection-close", "keep-alive"])
def test_an_answer_before_the_body_is_read_is_not_lost(
    example_server: RunningServer, close: bool
) -> None:
    # The unknown model is refused before the body is read; with `Connection: close` the
    # server must still take the body in before closing, or the client gets a reset.
    answer = post_whole_body(example_server, "/v2/models/no-such-model/infer", close=close)
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]
