"""The v1 protocol on a real ``infership serve`` over a loopback socket: the curl calls
docs/v1-protocol.md shows, as curl sends them, and hostile bodies that must not hurt it."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import EXAMPLE, TESTDATA, RunningServer

pytestmark = pytest.mark.e2e

CURL = shutil.which("curl")


def curl(*args: str) -> tuple[int, Any]:
    assert CURL is not None
    result = subprocess.run(
        [CURL, "-s", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
def test_the_documented_curl_calls(example_server: RunningServer, tmp_path: Path) -> None:
    url = example_server.url
    status, doc = curl(f"{url}/v1/models/{EXAMPLE}")
    assert status == 200
    assert doc["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]

    # { printf '{"instances": [{"b64": "'; base64 -w0 chelsea.jpg; printf '"}]}'; } > request.json
    image = base64.b64encode((TESTDATA / "images" / "chelsea.jpg").read_bytes()).decode()
    request = tmp_path / "request.json"
    request.write_text('{"instances": [{"b64": "' + image + '"}]}')
    status, doc = curl("-d", f"@{request}", f"{url}/v1/models/{EXAMPLE}:predict")
    assert status == 200, doc
    (prediction,) = doc["predictions"]
    assert prediction["label"][0] == "Egyptian cat"
    assert prediction["class_index"][0] == 285

    status, doc = curl("-d", '{"instances": [{"b64": "bm90IGFuIGltYWdl"}]}',
                       f"{url}/v1/models/{EXAMPLE}:predict")  # fmt: skip
    assert status == 400
    assert "image 0" in str(doc["error"])


def test_hostile_bodies_are_refused_and_the_server_stays_ready(
    example_server: RunningServer,
) -> None:
    predict = f"{example_server.url}/v1/models/{EXAMPLE}:predict"
    hostile = [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"instances": [' + b'{"b64": "!!"},' * 10_000 + b'{"b64": "!!"}]}',
        b'{"instances": [' + b'{"image": {"b64": "AAAA"}},' * 5_000 + b"1]}",
        b'{"inputs": {"image": ' + b"[" * 40 + b'"x"' + b"]" * 40 + b"}}",
        b'{"instances": [{"b64": "' + b"/" * 4_000_000 + b'"}]}',
    ]
    with httpx.Client(timeout=60) as client:
        for body in hostile:
            response = client.post(predict, content=body)
            assert 400 <= response.status_code < 500, (body[:60], response.text)
            assert list(response.json()) == ["error"]
        assert client.get(f"{example_server.url}/v2/health/ready").status_code == 200
