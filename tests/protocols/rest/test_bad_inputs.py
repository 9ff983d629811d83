"""Every malformed request gets the right 4xx with a JSON ``{"error": ...}`` that says what is
wrong, and the server keeps serving afterwards."""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image

MODEL = "efficientnet-lite0"
INFER = f"/v2/models/{MODEL}/infer"
HEADER = "Inference-Header-Content-Length"
CHELSEA = (Path(__file__).parents[2] / "testdata" / "images" / "chelsea.jpg").read_bytes()
MIB = 1024 * 1024


def _png(width: int, height: int) -> bytes:
    """A single-colour PNG: a few KiB on the wire, ``width * height`` pixels decoded."""
    out = io.BytesIO()
    Image.new("L", (width, height), 128).save(out, format="PNG")
    return out.getvalue()


def _json(doc: Any) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": "application/json"}, orjson.dumps(doc)


def _binary(
    inputs: list[tuple[str, str, list[int], bytes]],
    *,
    send: slice = slice(None),
    header_length: str | None = None,
    **extra: Any,
) -> tuple[dict[str, str], bytes]:
    """JSON header + binary tensors; ``send`` cuts the binary section, ``header_length`` lies."""
    doc = {
        "inputs": [
            {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
            for n, d, s, b in inputs
        ],
        **extra,
    }
    header = orjson.dumps(doc)
    blob = b"".join(b for *_, b in inputs)
    length = str(len(header)) if header_length is None else header_length
    return {HEADER: length}, header + blob[send]


def _image(data: bytes) -> tuple[str, str, list[int], bytes]:
    return ("image", "BYTES", [1], struct.pack("<I", len(data)) + data)


def _fp32(shape: list[int], datatype: str = "FP32") -> tuple[str, str, list[int], bytes]:
    count = 1
    for dim in shape:
        count *= dim
    return ("input", datatype, shape, bytes(4 * count))


def _multipart(fields: dict[str, str]) -> tuple[dict[str, str], bytes]:
    boundary = "infership-test-boundary"
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return headers, parts + f"--{boundary}--\r\n".encode()


def _images(count: int, image: bytes = b"x") -> tuple[str, str, list[int], bytes]:
    blob = (struct.pack("<I", len(image)) + image) * count
    return ("image", "BYTES", [count], blob)


def _multipart_files(count: int) -> tuple[dict[str, str], bytes]:
    boundary = "infership-test-boundary"
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"; filename="{i}.jpg"\r\n'
        f"Content-Type: image/jpeg\r\n\r\nx\r\n".encode()
        for i in range(count)
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return headers, parts + f"--{boundary}--\r\n".encode()


GOOD_TENSOR = {"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224]}
IMAGE = _image(CHELSEA)

# (id, method, path, headers, body, expected status, substring of the error message)
CASES: list[tuple[str, str, str, dict[str, str], bytes, int, str]] = [
    ("unknown-model", "POST", "/v2/models/nope/infer", *_binary([IMAGE]), 404,
     "unknown model 'nope'"),
    ("unknown-version", "POST", f"/v2/models/{MODEL}/versions/7/infer", *_binary([IMAGE]), 404,
     "has no version '7'"),
    ("non-numeric-version", "POST", f"/v2/models/{MODEL}/versions/latest/infer", *_binary([IMAGE]),
     404, "has no version"),
    ("unknown-model-metadata", "GET", "/v2/models/nope", {}, b"", 404, "unknown model"),
    ("no-inputs-key", "POST", INFER, *_json({"id": "x"}), 400, "inputs must be a non-empty list"),
    ("empty-inputs", "POST", INFER, *_json({"inputs": []}), 400, "inputs must be a non-empty list"),
    ("extra-input", "POST", INFER,
     *_binary([IMAGE, ("extra", "FP32", [1], bytes(4))]), 400, "has no input 'extra'"),
    ("wrong-shape", "POST", INFER, *_binary([_fp32([1, 3, 224, 223])]), 400,
     "has shape [1, 3, 224, 223]"),
    ("wrong-datatype", "POST", INFER, *_binary([_fp32([1, 3, 224, 224], "INT32")]), 400,
     "must be FP32, got INT32"),
    ("data-length-not-shape", "POST", INFER,
     *_json({"inputs": [{**GOOD_TENSOR, "data": [0.0, 1.0]}]}), 400, "data has 2 elements"),
    ("malformed-json", "POST", INFER, {}, b'{"inputs": [', 400, "not valid JSON"),
    ("json-not-an-object", "POST", INFER, *_json([1, 2]), 400, "must be a JSON object"),
    ("inputs-not-a-list", "POST", INFER, *_json({"inputs": {**GOOD_TENSOR, "data": [0.0]}}), 400,
     "inputs must be a non-empty list"),
    ("input-missing-datatype", "POST", INFER,
     *_json({"inputs": [{"name": "input", "shape": [1], "data": [0.0]}]}), 400,
     "inputs[0].datatype is required"),
    ("shape-with-a-string", "POST", INFER,
     *_json({"inputs": [{**GOOD_TENSOR, "shape": [1, "3", 224, 224], "data": [0.0]}]}), 400,
     "inputs[0].shape must be a list of non-negative integers"),
    ("body-over-limit", "POST", INFER, {}, b" " * (9 * MIB), 413, "over the limit"),
    ("truncated-binary", "POST", INFER, *_binary([IMAGE], send=slice(0, 1000)), 400,
     "truncated binary data"),
    ("header-length-over-body", "POST", INFER, *_binary([IMAGE], header_length="99999999"), 400,
     f"{HEADER} is 99999999"),
    ("header-length-not-a-number", "POST", INFER, *_binary([IMAGE], header_length="abc"), 400,
     f"{HEADER} must be a non-negative integer"),
    ("empty-body", "POST", INFER, {}, b"", 400, "empty request body"),
    ("not-an-image", "POST", INFER, *_binary([_image(b"hello, not an image")]), 400,
     "not an image format"),
    ("truncated-jpeg", "POST", INFER, *_binary([_image(CHELSEA[: len(CHELSEA) // 2])]), 400,
     "cannot decode"),
    ("too-many-pixels-infer", "POST", INFER, *_binary([_image(_png(3000, 3000))]), 413,
     "9000000 pixels"),
    ("too-many-pixels-predict", "POST", "/predict", {"Content-Type": "image/png"},
     _png(3000, 3000), 413, "pixels"),
    ("predict-text-plain", "POST", "/predict", {"Content-Type": "text/plain"}, b"cat", 415,
     "not an image upload"),
    ("predict-multipart-without-file", "POST", "/predict", *_multipart({"note": "no file"}), 400,
     "holds no file"),
    ("predict-empty-image", "POST", "/predict", {"Content-Type": "image/jpeg"}, b"", 400,
     "empty request body"),
    ("predict-bad-top-k", "POST", "/predict?top_k=0", {"Content-Type": "image/jpeg"}, CHELSEA, 400,
     "top_k must be"),
    ("unknown-output", "POST", INFER, *_binary([IMAGE], outputs=[{"name": "nope"}]), 400,
     "has no output 'nope'"),
    ("lowercase-datatype", "POST", INFER,
     *_json({"inputs": [{**GOOD_TENSOR, "datatype": "fp32", "data": [0.0]}]}), 400,
     "datatypes are upper case"),
    ("image-not-bytes", "POST", INFER,
     *_json({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1.0]}]}),
     400, "must be BYTES"),
    ("negative-timeout", "POST", INFER, *_binary([IMAGE], parameters={"timeout": -5}), 400,
     "parameter 'timeout' must be a non-negative"),
    ("gzip-bomb", "POST", INFER, {"Content-Encoding": "gzip"}, gzip.compress(bytes(9 * MIB)), 413,
     "decompressed request body is over the limit"),
    ("more-images-than-the-limit", "POST", INFER, *_binary([_images(65)]), 413,
     "holds 65 images; model 'efficientnet-lite0' takes at most 4"),
    # max_batch_size (4) caps the images of one request below max_images_per_request (64).
    ("too-many-dimensions", "POST", INFER, *_binary([_fp32([1] * 40)]), 400,
     "40 dimensions"),
    ("many-duplicate-input-names", "POST", INFER,
     *_json({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}] * 20000}),
     400, "duplicate input names"),
    ("more-images-than-max-batch-size", "POST", INFER, *_binary([_images(5, CHELSEA)]), 413,
     "takes at most 4 per request"),
    ("more-rows-than-max-batch-size", "POST", INFER, *_binary([_fp32([5, 3, 224, 224])]), 413,
     "takes at most 4 rows per request"),
    ("predict-more-files-than-the-limit", "POST", "/predict", *_multipart_files(65), 413,
     "Too many files"),
    # str.isdigit() accepts "²" and numbers int() refuses to parse: these must not be 500s.
    ("superscript-version", "POST", f"/v2/models/{MODEL}/versions/%C2%B2/infer", *_binary([IMAGE]),
     404, "has no version"),
    ("superscript-version-ready", "GET", f"/v2/models/{MODEL}/versions/%C2%B2/ready", {}, b"",
     404, "has no version"),
    ("huge-version", "GET", f"/v2/models/{MODEL}/versions/{'9' * 5000}", {}, b"", 404,
     "has no version"),
    ("predict-superscript-top-k", "POST", "/predict?top_k=%C2%B2", {"Content-Type": "image/jpeg"},
     CHELSEA, 400, "top_k must be"),
    ("predict-huge-top-k", "POST", f"/predict?top_k={'9' * 5000}", {"Content-Type": "image/jpeg"},
     CHELSEA, 400, "top_k must be"),
    ("unsupported-content-encoding", "POST", INFER,
     {**_binary([IMAGE])[0], "Content-Encoding": "br"}, _binary([IMAGE])[1], 415,
     "Content-Encoding 'br' is not supported"),
    ("corrupt-gzip", "POST", INFER, {"Content-Encoding": "gzip"}, b"\x1f\x8b not gzip", 400,
     "not valid gzip data"),
    # Issue 16: the JSON parser's work is bounded before it starts (F1) ...
    ("json-values-over-the-limit", "POST", INFER, {"Content-Encoding": "gzip"},
     gzip.compress(b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1],"data":['
                   + b"[]," * 2_200_000 + b"[]]}]}"), 413, "the limit is 4194304"),
    # ... an empty tensor cannot name a shape numpy cannot hold (F6) ...
    ("empty-tensor-huge-dimension-json", "POST", INFER,
     *_json({"inputs": [{**GOOD_TENSOR, "shape": [0, 2**63 - 1], "data": []}]}), 400,
     "elements (zero dimensions aside)"),
    ("empty-tensor-huge-dimension-binary", "POST", INFER, *_binary([_fp32([0, 2**63 - 1])]), 400,
     "elements (zero dimensions aside)"),
    ("empty-bytes-tensor-huge-dimension", "POST", INFER,
     *_binary([("image", "BYTES", [0, 2**62, 4], b"")]), 400,
     "elements (zero dimensions aside)"),
    # ... and a timeout is a number, whatever the protocol (F8).
    ("string-timeout", "POST", INFER, *_binary([IMAGE], parameters={"timeout": "abc"}), 400,
     "parameter 'timeout' must be a non-negative"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_bad_request_gets_a_json_error_and_the_server_keeps_serving(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    message: str,
) -> None:
    response = await client.request(method, path, headers=headers, content=body)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert set(doc) == {"error"}
    assert message in doc["error"]

    good_headers, good_body = _binary([IMAGE])
    response = await client.post(INFER, headers=good_headers, content=good_body)
    assert response.status_code == 200, response.text
    class_index = next(o for o in response.json()["outputs"] if o["name"] == "class_index")
    assert class_index["data"][0] == 285
