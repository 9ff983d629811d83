"""The requests a benchmark sends, built once and replayed unchanged.

Bodies are built with infership's own tensor serialization (:mod:`infership.tensors`), so the
binary layout sent here is the one the server's codec documents.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from infership.errors import InvalidRequest
from infership.tensors import tensor_to_json_data, tensor_to_raw
from infership.types import Array, numpy_dtype

PAYLOADS: Final = ("upload", "raw", "oip-json", "oip-binary", "grpc", "grpc-stream")
"""Payload kinds: multipart image upload, raw image body, OIP JSON, OIP binary tensors, gRPC
unary calls, gRPC requests on one stream per connection."""

_IMAGE_TYPES: Final = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


class PayloadError(ValueError):
    """The payload cannot be built from what was given (message says what to change)."""


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP/1.1 request; :meth:`wire` gives the exact bytes sent on a keep-alive connection."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def wire(self, host: str) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass(frozen=True)
class Tensor:
    """A named input tensor (``data`` is an object array of bytes for BYTES)."""

    name: str
    datatype: str
    data: Array


def parse_tensor(spec: str) -> Tensor:
    """``NAME:DATATYPE:SHAPE`` (e.g. ``x:FP32:1,16``) → a tensor of fixed pseudo-random values.

    The values are seeded, so every run and every target receives the same data.

    >>> parse_tensor("x:INT32:2,3").data.shape
    (2, 3)
    """
    parts = spec.split(":")
    if len(parts) != 3:
        raise PayloadError(f"tensor {spec!r}: expected NAME:DATATYPE:SHAPE, e.g. x:FP32:1,16")
    name, datatype, shape_text = parts
    try:
        shape = tuple(int(n) for n in shape_text.split(","))
    except ValueError:
        raise PayloadError(f"tensor {spec!r}: shape must be comma-separated integers") from None
    if not name or any(n < 0 for n in shape):
        raise PayloadError(f"tensor {spec!r}: needs a name and non-negative dimensions")
    if datatype == "BYTES":
        raise PayloadError(f"tensor {spec!r}: BYTES tensors come from --image, not random data")
    try:
        dtype = numpy_dtype(datatype)
    except InvalidRequest as exc:
        raise PayloadError(f"tensor {spec!r}: {exc}") from None
    rng = np.random.default_rng(0)
    if dtype.kind == "f":
        data: Array = rng.standard_normal(shape).astype(dtype)
    elif dtype.kind == "b":
        data = rng.integers(0, 2, shape).astype(dtype)
    else:
        data = rng.integers(0, 100, shape).astype(dtype)
    return Tensor(name, datatype, data)


def image_tensor(image: bytes, name: str = "image") -> Tensor:
    """One encoded image as the ``[1]`` BYTES tensor a model's image signature takes."""
    data = np.empty(1, dtype=object)
    data[0] = image
    return Tensor(name, "BYTES", data)


def upload(image: bytes, filename: str, path: str = "/predict") -> HttpRequest:
    """A multipart/form-data upload with one file in field ``img`` (what ``curl -F`` sends)."""
    boundary = uuid.uuid4().hex
    content_type = _IMAGE_TYPES.get(Path(filename).suffix.lower(), "application/octet-stream")
    body = b"".join(
        [
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="img"; filename="{filename}"\r\n'.encode(),
            f"Content-Type: {content_type}\r\n\r\n".encode(),
            image,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    headers = (("Content-Type", f"multipart/form-data; boundary={boundary}"),)
    return HttpRequest("POST", path, headers, body)


def raw_image(image: bytes, filename: str, path: str = "/predict") -> HttpRequest:
    """The image as the whole request body, typed by its file extension."""
    content_type = _IMAGE_TYPES.get(Path(filename).suffix.lower(), "application/octet-stream")
    return HttpRequest("POST", path, (("Content-Type", content_type),), image)


def infer_path(model: str, version: str | None = None) -> str:
    versioned = f"/versions/{version}" if version else ""
    return f"/v2/models/{model}{versioned}/infer"


def oip_json(path: str, inputs: Sequence[Tensor], outputs: Sequence[str] = ()) -> HttpRequest:
    """An OIP infer request with every tensor as JSON data (BYTES must be UTF-8 text)."""
    entries = []
    for tensor in inputs:
        if tensor.datatype == "BYTES":
            try:
                data: Any = [b.decode("utf-8") for b in tensor.data.ravel().tolist()]
            except UnicodeDecodeError:
                raise PayloadError(
                    f"input {tensor.name!r} holds binary bytes (an image?), which JSON cannot "
                    "carry; use --payload oip-binary, or an FP32 --input tensor"
                ) from None
        else:
            data = tensor_to_json_data(tensor.data)
        entries.append(_entry(tensor) | {"data": data})
    doc = {"inputs": entries, "outputs": [{"name": name} for name in outputs]}
    body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return HttpRequest("POST", path, (("Content-Type", "application/json"),), body)


def oip_binary(path: str, inputs: Sequence[Tensor], outputs: Sequence[str] = ()) -> HttpRequest:
    """An OIP infer request with every input, and every output asked for, as binary tensors."""
    blobs = [bytes(tensor_to_raw(tensor.data)) for tensor in inputs]
    entries = [
        _entry(tensor) | {"parameters": {"binary_data_size": len(blob)}}
        for tensor, blob in zip(inputs, blobs, strict=True)
    ]
    doc: dict[str, Any] = {"inputs": entries, "parameters": {"binary_data_output": True}}
    if outputs:
        doc["outputs"] = [{"name": name, "parameters": {"binary_data": True}} for name in outputs]
    header = orjson.dumps(doc)
    headers = (
        ("Content-Type", "application/octet-stream"),
        ("Inference-Header-Content-Length", str(len(header))),
    )
    return HttpRequest("POST", path, headers, header + b"".join(blobs))


def _entry(tensor: Tensor) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.data.shape)}


def grpc_infer_request(
    model: str, inputs: Sequence[Tensor], outputs: Sequence[str] = (), version: str = ""
) -> bytes:
    """A serialized OIP gRPC ``ModelInferRequest`` with the inputs in ``raw_input_contents``."""
    from infership.protocols.grpc._pb import pb

    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for tensor in inputs:
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.data.shape)
        request.raw_input_contents.append(bytes(tensor_to_raw(tensor.data)))
    for name in outputs:
        request.outputs.add(name=name)
    return request.SerializeToString()
