"""Image preprocessing: layout, normalisation, draft decoding and refusing bad or huge images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import reference_preprocess
from infership.errors import InvalidRequest, PayloadTooLarge
from infership.processing.image import ImagePreprocessor
from infership.repository.manifest import ImagePreprocess

CONFIG = ImagePreprocess(input="x", resize=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_matches_the_documented_preprocessing(chelsea: bytes) -> None:
    out = ImagePreprocessor(CONFIG, max_pixels=10**7).batch([chelsea])
    assert out.shape == (1, 3, 224, 224)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference_preprocess(chelsea), atol=1e-5)


def test_nhwc_layout_and_grayscale() -> None:
    gray = ImagePreprocess(
        input="x", resize=(8, 6), color="L", mean=(0.0,), std=(1.0,), layout="NHWC"
    )
    out = ImagePreprocessor(gray, max_pixels=10**7).one(encode(Image.new("RGB", (30, 40), "white")))
    assert out.shape == (8, 6, 1)
    np.testing.assert_allclose(out, 1.0)


def test_resize_shorter_then_centre_crop() -> None:
    config = ImagePreprocess(input="x", resize=(4, 4), resize_shorter=8, interpolation="nearest")
    image = Image.new("RGB", (32, 16), "black")
    image.paste((255, 255, 255), (12, 0, 20, 16))  # a white band in the middle
    out = ImagePreprocessor(config, max_pixels=10**7).one(encode(image, "PNG"))
    assert out.shape == (3, 4, 4)
    np.testing.assert_allclose(out, 1.0)  # the crop kept only the centre


def test_large_jpeg_decodes_in_draft_mode_to_the_right_size() -> None:
    big = encode(Image.new("RGB", (4000, 3000), (200, 100, 50)))
    out = ImagePreprocessor(CONFIG, max_pixels=10**8).one(big)
    assert out.shape == (3, 224, 224)
    np.testing.assert_allclose(
        out[:, 100, 100], (np.array([200, 100, 50]) / 255 - 0.5) / 0.5, atol=0.02
    )


def test_pixel_limit_is_checked_before_decoding() -> None:
    bomb = encode(Image.new("L", (5000, 5000)), "PNG")  # small file, 25 Mpx
    with pytest.raises(PayloadTooLarge, match="25000000 pixels"):
        ImagePreprocessor(CONFIG, max_pixels=10**6).one(bomb)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"not an image at all", "not an image format", id="garbage"),
    ],
)
def test_unreadable_images_are_invalid(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        ImagePreprocessor(CONFIG, max_pixels=10**7).one(data)


def test_truncated_jpeg_is_invalid(chelsea: bytes) -> None:
    with pytest.raises(InvalidRequest, match="image 3: cannot decode"):
        ImagePreprocessor(CONFIG, max_pixels=10**7).one(chelsea[: len(chelsea) // 2], index=3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"BM" + b"\xff" * 60, "cannot read", id="corrupt-bmp-header"),
        pytest.param(b"P6\n-1 -1\n255\n", "not an image format", id="ppm-not-allowed"),
        pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n", "not an image format", id="eps-never-opened"),
    ],
)
def test_corrupt_or_unsupported_formats_are_client_errors(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        ImagePreprocessor(CONFIG, max_pixels=10**7).one(data)
