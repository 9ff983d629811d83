"""Property tests: whatever bytes arrive, the decoders answer with our own errors, never crash.

The inputs mix pure noise with near-valid payloads (real images with bytes flipped, infer
requests with plausible but wrong fields), which is where parsers tend to break.
"""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infership.errors import ClientError
from infership.processing.image import ImagePreprocessor
from infership.protocols.rest.codec import decode_infer_request
from infership.repository.manifest import ImagePreprocess
from infership.tensors import deserialize_bytes_tensor, tensor_from_list, tensor_from_raw

IMAGES = Path(__file__).parent.parent / "testdata" / "images"
DATATYPES = ["BOOL", "UINT8", "INT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "BF16"]
PREPROCESSOR = ImagePreprocessor(
    ImagePreprocess(input="x", resize=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3),
    max_pixels=4_000_000,
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.one_of(
    st.lists(st.integers(-2, 6), max_size=4),
    st.lists(st.integers(0, 2**40), max_size=3),
    st.just("3"),
    st.none(),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=6),
    max_leaves=20,
)


@st.composite
def infer_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    inputs = []
    for i in range(draw(st.integers(0, 3))):
        item: dict[str, object] = {
            "name": draw(st.sampled_from([f"in{i}", "in0", ""])),
            "datatype": draw(st.sampled_from(DATATYPES)),
            "shape": draw(shapes),
        }
        if draw(st.booleans()):
            item["data"] = draw(json_values)
        else:
            item["parameters"] = {"binary_data_size": draw(st.integers(-1, 64))}
        inputs.append(item)
    doc = draw(st.sampled_from([{"inputs": inputs}, {"inputs": inputs, "outputs": [{}]}]))
    header = json.dumps(doc).encode()  # not orjson: big integers must reach the decoder
    tail = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        return header + tail, str(draw(st.integers(-1, len(header) + len(tail) + 1)))
    return header, None


@FUZZ
@given(body=st.binary(max_size=256), header_length=st.none() | st.text(max_size=6))
def test_infer_request_decoder_on_noise_raises_only_client_errors(
    body: bytes, header_length: str | None
) -> None:
    with contextlib.suppress(ClientError):
        decode_infer_request(body, header_length=header_length, max_body_bytes=1 << 16)


@FUZZ
@given(request=infer_bodies())
def test_infer_request_decoder_on_near_valid_requests_raises_only_client_errors(
    request: tuple[bytes, str | None],
) -> None:
    body, header_length = request
    try:
        decoded = decode_infer_request(body, header_length=header_length, max_body_bytes=1 << 16)
    except ClientError:
        return
    for array in decoded.inputs.values():
        assert isinstance(array, np.ndarray)


@FUZZ
@given(buf=st.binary(max_size=128), count=st.integers(0, 64))
def test_bytes_tensor_deserializer_raises_only_client_errors(buf: bytes, count: int) -> None:
    try:
        array = deserialize_bytes_tensor(buf, count)
    except ClientError:
        return
    assert array.shape == (count,)


@FUZZ
@given(
    datatype=st.sampled_from(DATATYPES),
    shape=shapes,
    raw=st.binary(max_size=64),
    data=json_values,
)
def test_tensor_builders_raise_only_client_errors(
    datatype: str, shape: object, raw: bytes, data: object
) -> None:
    for build in (
        lambda: tensor_from_raw("x", datatype, shape, raw),  # type: ignore[arg-type]
        lambda: tensor_from_list("x", datatype, shape, data),  # type: ignore[arg-type]
    ):
        with contextlib.suppress(ClientError):
            build()


@pytest.mark.parametrize("name", sorted(p.name for p in IMAGES.iterdir()))
@FUZZ
@given(data=st.data())
def test_image_decoder_on_corrupted_real_images_raises_only_client_errors(
    name: str, data: st.DataObject
) -> None:
    image = bytearray((IMAGES / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(image) - 1))
        image[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(image)))
    try:
        out = PREPROCESSOR.one(bytes(image[:cut]))
    except ClientError:
        return
    assert out.shape == (3, 32, 32)


@FUZZ
@given(blob=st.binary(max_size=512), width=st.integers(0, 70000), height=st.integers(0, 70000))
def test_image_decoder_on_noise_and_forged_headers_raises_only_client_errors(
    blob: bytes, width: int, height: int
) -> None:
    # A PNG signature and IHDR claiming any size, then noise: the classic decompression bomb.
    forged = b"\x89PNG\r\n\x1a\n" + struct.pack(
        ">I4sIIBBBBB", 13, b"IHDR", width, height, 8, 2, 0, 0, 0
    )
    for candidate in (blob, forged + blob):
        with contextlib.suppress(ClientError):
            PREPROCESSOR.one(candidate)
