"""Issue 16's hostile inputs against a real server over sockets: each class of fault, with its
reproduction, answered with a clear error while the server keeps serving everyone else."""

from __future__ import annotations

import asyncio
import gzip
import io
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from PIL import Image

from conftest import RunningServer, start_server, stop_server
from infership.protocols.rest.body import SMALL_BODY_BYTES
from infership.protocols.rest.codec import MAX_JSON_VALUES
from infership.protocols.rest.infer import INLINE_DECODE_BYTES

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
ADD = "/v2/models/add/infer"
MIB = 1024 * 1024
BODY_LIMIT = 64 * MIB  # the default http.max_body_bytes


@pytest.fixture(scope="module")
def add_server() -> Iterator[RunningServer]:
    """The benchmark's y = x + 1 model (FP32 [-1, 16]), default limits."""
    server = start_server(str(ROOT / "bench" / "models"))
    yield server
    assert server.process.poll() is None, "the server died during the tests"
    stop_server(server)


def _alive(server: RunningServer) -> None:
    """The server still answers inference correctly (and so has not aborted)."""
    x = np.arange(16, dtype=np.float32)
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": x.tolist()}]}
    response = httpx.post(server.url + ADD, content=orjson.dumps(doc), timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == (x + 1).tolist()


def _post(server: RunningServer, body: bytes, encoding: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if encoding:
        headers["Content-Encoding"] = encoding
    return httpx.post(server.url + ADD, content=body, headers=headers, timeout=120)


# --- F1: a 35 KB request killed the server ---------------------------------------------------


def test_the_35_kb_gzip_body_that_aborted_the_server_gets_413(add_server: RunningServer) -> None:
    body = gzip.compress(
        b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,16],"data":['
        + b"1," * 18_000_000
        + b"1]}]}"
    )
    assert len(body) < 40_000
    response = _post(add_server, body, "gzip")
    assert response.status_code == 413
    assert "values; the limit is" in response.json()["error"]
    _alive(add_server)


def _array_body(values: int, declared: int) -> bytes:
    """A JSON request whose data array holds ``values`` ones and whose shape declares
    ``declared`` elements, so that the error (or the answer) shows the count was exact."""
    return (
        b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,%d],"data":[' % declared
        + b"1," * (values - 1)
        + b"1]}]}"
    )


# Element counts around every internal limit of the JSON path: pysimdjson's 2**24 (where it
# corrupted memory), our value bound, the sizes where a body takes the budget and where it is
# decoded in a thread, the binary-header cache, and the body limit itself.
_COUNTS = sorted(
    {
        1,
        16,
        1023,
        1024,
        1025,  # the binary-header cache holds JSON of up to 2048 bytes
        SMALL_BODY_BYTES // 2 - 1,
        SMALL_BODY_BYTES // 2,
        SMALL_BODY_BYTES // 2 + 1,
        INLINE_DECODE_BYTES // 2 - 1,
        INLINE_DECODE_BYTES // 2 + 1,
        MAX_JSON_VALUES - 16,
        MAX_JSON_VALUES - 6,
        MAX_JSON_VALUES - 5,
        MAX_JSON_VALUES + 1,
        2**24 - 1,
        2**24,
        2**24 + 1,
        BODY_LIMIT // 2 - 40,  # a body just under the limit
        BODY_LIMIT // 2 + 1,  # just over
    }
)


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_json_arrays_around_every_internal_limit_are_counted_exactly_or_refused(
    add_server: RunningServer, encoding: str | None
) -> None:
    for count in _COUNTS:
        raw = _array_body(count, count + 1)  # one short of its shape: a 400 naming the count
        body = gzip.compress(raw, compresslevel=1) if encoding else raw
        response = _post(add_server, body, encoding)
        error = response.json()["error"]
        values_bound = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
        if len(raw) > BODY_LIMIT:
            assert response.status_code == 413, (count, error)
            assert "over the limit" in error
        elif len(raw) > MAX_JSON_VALUES and values_bound > MAX_JSON_VALUES:
            assert response.status_code == 413, (count, error)
            assert f"the limit is {MAX_JSON_VALUES}" in error
        else:
            assert response.status_code == 400, (count, error)
            assert f"data has {count} elements but shape [1, {count + 1}]" in error
        _alive(add_server)


# --- F6: an empty tensor with a huge dimension --------------------------------------------------


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_an_empty_tensor_with_a_huge_dimension_gets_400(
    add_server: RunningServer, datatype: str
) -> None:
    shape = [0, 2**63 - 1]
    doc = {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": []}]}
    response = _post(add_server, orjson.dumps(doc), None)
    assert response.status_code == 400, response.text
    assert "elements (zero dimensions aside)" in response.json()["error"]
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    )
    response = httpx.post(
        add_server.url + ADD,
        content=header,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400, response.text
    assert "elements (zero dimensions aside)" in response.json()["error"]
    _alive(add_server)


# --- infinities: JSON cannot carry them, so they travel as binary ------------------------------


def test_infinite_outputs_come_back_as_binary_not_as_null(add_server: RunningServer) -> None:
    x = [1e39, -1e39] + [0.0] * 14  # overflow FP32 to ±inf, as an IEEE cast does
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 16], "data": x}]}
    response = _post(add_server, orjson.dumps(doc), None)
    assert response.status_code == 200, response.text
    length = int(response.headers["Inference-Header-Content-Length"])
    header = orjson.loads(response.content[:length])
    assert "data" not in header["outputs"][0]
    y = np.frombuffer(response.content[length:], dtype="<f4")
    assert y[0] == np.inf
    assert y[1] == -np.inf
    assert (y[2:] == 1).all()


# --- F3: one slow body must not stall every other large body --------------------------------


def _noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


async def _trickler(port: int, head: bytes, burst: bytes, stop: asyncio.Event) -> bytes:
    """Send ``head`` and ``burst``, then a byte of body every 0.2 s until ``stop``; return the
    answer (empty if none came)."""
    chunked = b"chunked" in head
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + burst)
        await writer.drain()
        answer = asyncio.ensure_future(reader.read(65536))
        while not stop.is_set() and not answer.done():
            writer.write(b"1\r\n1\r\n" if chunked else b"1")
            await asyncio.wait({answer}, timeout=0.2)
        return answer.result() if answer.done() else b""
    except ConnectionError:
        return b"(reset)"
    finally:
        writer.close()


def _head(path: str, length: str | None) -> bytes:
    size = f"content-length: {length}" if length else "transfer-encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: image/png\r\n{size}\r\n\r\n".encode()


async def test_slow_bodies_do_not_hold_up_other_large_bodies(
    example_server: RunningServer,
) -> None:
    port = int(example_server.url.rsplit(":", 1)[1])
    stop = asyncio.Event()
    megabyte = b"%x\r\n%s\r\n" % (MIB, b"1" * MIB)
    slow = [
        _trickler(port, _head("/predict", None), b"", stop),  # chunked, a byte at a time
        _trickler(port, _head("/predict", "60000000"), b"", stop),
        # These send enough to queue for the body budget, then trickle.
        _trickler(port, _head("/predict", None), megabyte, stop),
        _trickler(port, _head("/predict", "60000000"), b"1" * (3 * MIB), stop),
    ]
    tasks = [asyncio.ensure_future(t) for t in slow]
    await asyncio.sleep(0.5)
    png = _noise_png(270)
    assert len(png) > 200_000
    pixels = np.zeros((1, 3, 224, 224), dtype=np.float32)
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224]}
    json_body = orjson.dumps({"inputs": [{**tensor, "data": pixels.ravel().tolist()}]})
    async with httpx.AsyncClient(base_url=example_server.url, timeout=60) as client:
        started = time.monotonic()
        upload, infer = await asyncio.gather(
            client.post("/predict", content=png, headers={"content-type": "image/png"}),
            client.post("/v2/models/efficientnet-lite0/infer", content=json_body),
        )
        took = time.monotonic() - started
    stop.set()
    answers = await asyncio.gather(*tasks)
    assert upload.status_code == 200, upload.text
    assert infer.status_code == 200, infer.text
    print(f"upload and JSON infer answered in {took:.2f} s beside four slow senders")
    # Behaviour, not speed: before the fix these waited for the 60 s body timeout.
    assert took < 10, f"large bodies waited {took:.1f} s behind slow senders"
    # Those holding the budget while the upload waited were cut off; the others still trickle.
    for answer in answers[2:]:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
        assert b"while other bodies waited for memory" in answer
    assert answers[:2] == [b"", b""]


# --- F4: anonymous kept-alive connections must not lock out inference ---------------------------


async def _poller(port: int, stop: asyncio.Event, answered: list[int]) -> None:
    """A kept-alive client asking /v2/health/live every 3 s (reconnecting if it was closed)."""
    request = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            while not stop.is_set():
                writer.write(request)
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                answered.append(int(head.split(b" ")[1]))
                await asyncio.wait({asyncio.ensure_future(stop.wait())}, timeout=3)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass  # closed to make room: reconnect, as an HTTP client does
        finally:
            writer.close()


async def test_hundreds_of_idle_health_pollers_do_not_lock_out_inference(
    example_server: RunningServer, chelsea: bytes
) -> None:
    port = int(example_server.url.rsplit(":", 1)[1])
    stop = asyncio.Event()
    polled: list[int] = []
    pollers = [asyncio.ensure_future(_poller(port, stop, polled)) for _ in range(260)]
    await asyncio.sleep(2)
    image = struct.pack("<I", len(chelsea)) + chelsea
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(image)},
                }
            ]
        }
    )
    statuses = []
    async with httpx.AsyncClient(base_url=example_server.url, timeout=30) as client:
        for _ in range(40):
            response = await client.post(
                "/v2/models/efficientnet-lite0/infer",
                content=header + image,
                headers={"Inference-Header-Content-Length": str(len(header))},
            )
            statuses.append(response.status_code)
    stop.set()
    await asyncio.gather(*pollers)
    assert statuses == [200] * 40
    assert polled, "the pollers were never answered"
