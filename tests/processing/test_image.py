"""Image preprocessing: layout, normalisation, draft decoding, colour modes, EXIF orientation,
and refusing bad images or images whose decoding would cost too much."""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from conftest import reference_preprocess
from infership.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from infership.processing.image import MAX_DECODE_BYTES, MAX_SIDE, ImagePreprocessor
from infership.repository.manifest import ImagePreprocess
from infership.settings import LimitSettings

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


# --- Colour modes, transparency and EXIF orientation (issue 16, F5) ---------------------------

EXAMPLE_MODEL = Path(__file__).parents[2] / "src/infership/examples/models/efficientnet-lite0"
EGYPTIAN_CAT = 285


@pytest.fixture(scope="module")
def top1() -> Callable[[np.ndarray], int]:
    """The example classifier's top-1 class for one preprocessed [3, 224, 224] image."""
    session = ort.InferenceSession(
        str(EXAMPLE_MODEL / "1/model.onnx"), providers=["CPUExecutionProvider"]
    )
    return lambda pixels: int(np.argmax(session.run(["logits"], {"input": pixels[None]})[0]))


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.open(Path(__file__).parents[1] / "testdata/images/chelsea.jpg").convert("RGB")


def sixteen_bit(image: Image.Image, mode: str = "I;16") -> Image.Image:
    """``image`` as 16-bit grey: 8-bit grey scaled so 255 becomes 65535."""
    wide = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    dtype = ">u2" if mode == "I;16B" else "<u2"  # Pillow's convert() to I;16B clips at 255
    return Image.frombytes(mode, image.size, wide.astype(dtype).tobytes())


@pytest.mark.parametrize(
    ("fmt", "mode"), [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I;16B"), ("PNG", "I;16B")]
)
def test_16_bit_grey_is_scaled_to_8_bits_not_clipped_to_white(
    cat: Image.Image, top1: Callable[[np.ndarray], int], fmt: str, mode: str
) -> None:
    pre = ImagePreprocessor(CONFIG, max_pixels=10**7)
    out = pre.one(encode(sixteen_bit(cat, mode), fmt))
    grey = pre.one(encode(cat.convert("L"), "PNG"))
    np.testing.assert_allclose(out, grey, atol=2 / 255)
    assert top1(out) == EGYPTIAN_CAT


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("PNG", "1"),
        ("PNG", "L"),
        ("PNG", "P"),
        ("PNG", "RGB"),
        ("GIF", "P"),
        ("BMP", "1"),
        ("BMP", "L"),
        ("BMP", "P"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
        ("TIFF", "1"),
        ("TIFF", "L"),
        ("TIFF", "P"),
        ("TIFF", "CMYK"),
        ("TIFF", "YCbCr"),
        ("TIFF", "LAB"),
        ("WEBP", "RGB"),
    ],
)
def test_every_opaque_mode_converts_as_pillow_shows_it(
    cat: Image.Image, fmt: str, mode: str
) -> None:
    data = encode(cat.convert(mode), fmt)
    with Image.open(io.BytesIO(data)) as stored:
        expected = encode(stored.convert("RGB"), "PNG")
    pre = ImagePreprocessor(CONFIG, max_pixels=10**7)
    np.testing.assert_allclose(pre.one(data), pre.one(expected), atol=2 / 255)


@pytest.mark.parametrize(
    ("fmt", "mode"), [("PNG", "L"), ("PNG", "RGB"), ("TIFF", "CMYK"), ("TIFF", "LAB")]
)
def test_colour_and_grey_modes_keep_the_classification(
    cat: Image.Image, top1: Callable[[np.ndarray], int], fmt: str, mode: str
) -> None:
    out = ImagePreprocessor(CONFIG, max_pixels=10**7).one(encode(cat.convert(mode), fmt))
    assert top1(out) == EGYPTIAN_CAT


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("PNG", "RGBA"), ("PNG", "LA"), ("TIFF", "RGBA"), ("TIFF", "LA"), ("WEBP", "RGBA")],
)
def test_transparent_pixels_are_shown_over_white(fmt: str, mode: str) -> None:
    # Fully transparent black: dropping alpha (Pillow's convert) would make it black.
    image = Image.new(mode, (40, 30), (0,) * len(mode))
    out = ImagePreprocessor(CONFIG, max_pixels=10**7).one(encode(image, fmt))
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_half_transparent_pixels_blend_with_white() -> None:
    image = Image.new("RGBA", (40, 30), (0, 0, 0, 128))
    out = ImagePreprocessor(CONFIG, max_pixels=10**7).one(encode(image, "PNG"))
    np.testing.assert_allclose(out, (127 / 255 - 0.5) / 0.5, atol=1 / 255)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_and_colour_key_transparency_is_shown_over_white(fmt: str) -> None:
    image = Image.new("P", (40, 30), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    buffer = io.BytesIO()
    image.save(buffer, fmt, transparency=0)
    out = ImagePreprocessor(CONFIG, max_pixels=10**7).one(buffer.getvalue())
    np.testing.assert_allclose(out, 1.0, atol=1e-6)
    rgb = io.BytesIO()
    Image.new("RGB", (40, 30), (0, 0, 0)).save(rgb, "PNG", transparency=(0, 0, 0))
    np.testing.assert_allclose(ImagePreprocessor(CONFIG, max_pixels=10**7).one(rgb.getvalue()), 1.0)


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_samples_have_no_defined_range_and_are_refused(cat: Image.Image, mode: str) -> None:
    data = encode(cat.convert(mode), "TIFF")
    with pytest.raises(UnsupportedMediaType, match="image 2 has 32-bit"):
        ImagePreprocessor(CONFIG, max_pixels=10**7).one(data, index=2)


def with_orientation(upright: Image.Image, orientation: int, fmt: str) -> bytes:
    """``upright`` stored as a camera would: turned so that ``orientation`` shows it upright."""
    stored = upright
    if orientation in UNDO:
        stored = upright.transpose(UNDO[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, fmt, exif=exif)
    return buffer.getvalue()


# The inverse of each orientation's display transpose.
UNDO = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_so_the_model_sees_the_image_upright(
    cat: Image.Image, top1: Callable[[np.ndarray], int], fmt: str, orientation: int
) -> None:
    data = with_orientation(cat, orientation, fmt)
    with Image.open(io.BytesIO(data)) as stored:
        expected = encode(ImageOps.exif_transpose(stored).convert("RGB"), "PNG")
    pre = ImagePreprocessor(CONFIG, max_pixels=10**7)
    out = pre.one(data)
    assert np.abs(out - pre.one(expected)).mean() < 0.01
    assert top1(out) == EGYPTIAN_CAT


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_and_centre_crop_pick_the_same_pixels(orientation: int) -> None:
    # Asymmetric: a gradient across and a bar at one end, so a wrong mapping shows.
    config = ImagePreprocess(input="x", resize=(16, 24), resize_shorter=32)
    upright = Image.linear_gradient("L").resize((120, 300)).convert("RGB")
    upright.paste((255, 0, 0), (0, 0, 120, 20))
    pre = ImagePreprocessor(config, max_pixels=10**7)
    out = pre.one(with_orientation(upright, orientation, "PNG"))
    np.testing.assert_allclose(out, pre.one(encode(upright, "PNG")), atol=2 / 255)


def test_jpeg_draft_still_applies_with_a_sideways_exif_orientation(cat: Image.Image) -> None:
    big = cat.resize((4000, 2700))
    data = with_orientation(big, 6, "JPEG")
    pre = ImagePreprocessor(CONFIG, max_pixels=10**8, max_decode_bytes=4 * 2**20)
    assert pre.one(data).shape == (3, 224, 224)  # 4 MiB fits the 1/8 scale only


# --- Work per image is bounded (issue 16, F2) --------------------------------------------------


def png(mode: str, size: tuple[int, int]) -> bytes:
    return encode(Image.new(mode, size), "PNG")


@pytest.mark.parametrize("size", [(1, 39_999_999), (39_999_999, 1), (40_000, 1000)])
def test_a_side_over_the_limit_is_refused_before_decoding(size: tuple[int, int]) -> None:
    # A 1 x 39,999,999 PNG is 155 KB; decoding it took 1.5 GB and 7 s before the side limit.
    with pytest.raises(PayloadTooLarge, match=r"image 1 is \d+x\d+: its longer side is over"):
        ImagePreprocessor(CONFIG, max_pixels=4 * 10**7).one(png("L", size), index=1)


@pytest.mark.parametrize(
    ("mode", "size", "fmt"),
    [
        ("RGB", (4000, 4000), "PNG"),
        ("L", (5000, 5000), "PNG"),
        ("L", (5000, 5000), "GIF"),
        ("I;16", (3400, 3400), "PNG"),
        ("RGB", (1700, 1700), "WEBP"),
    ],
)
def test_an_image_whose_decoding_needs_too_much_memory_is_refused(
    mode: str, size: tuple[int, int], fmt: str
) -> None:
    with pytest.raises(PayloadTooLarge, match=rf"image 0 \({fmt} .*MiB to decode, over the"):
        ImagePreprocessor(CONFIG, max_pixels=4 * 10**7).one(encode(Image.new(mode, size), fmt))


def test_progressive_jpeg_is_charged_for_its_full_size_coefficients() -> None:
    image = Image.new("RGB", (3000, 3000), (10, 200, 30))
    baseline, progressive = io.BytesIO(), io.BytesIO()
    image.save(baseline, "JPEG")
    image.save(progressive, "JPEG", progressive=True, subsampling=0)
    pre = ImagePreprocessor(CONFIG, max_pixels=4 * 10**7, max_decode_bytes=32 * 2**20)
    assert pre.one(baseline.getvalue()).shape == (3, 224, 224)  # draft: 1/8 scale
    with pytest.raises(PayloadTooLarge, match="JPEG RGB 3000x3000"):
        pre.one(progressive.getvalue())


def tiled_tiff(size: int, tile: int) -> bytes:
    """A deflate-compressed grey TIFF of ``size`` squared pixels claiming ``tile``-sized tiles."""
    body = zlib.compress(b"\0" * 64)
    tags = [  # (tag, type, value): 3 SHORT, 4 LONG
        (256, 4, size), (257, 4, size), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
        (322, 4, tile), (323, 4, tile), (324, 4, 8), (325, 4, len(body)),
    ]  # fmt: skip
    ifd = (
        struct.pack("<H", len(tags))
        + b"".join(
            struct.pack("<HHI", tag, kind, 1)
            + struct.pack("<I" if kind == 4 else "<HH", value, *(() if kind == 4 else (0,)))
            for tag, kind, value in tags
        )
        + b"\0\0\0\0"
    )
    return b"II*\0" + struct.pack("<I", 8 + len(body)) + body + ifd


def test_tiff_with_a_huge_tile_is_refused_before_libtiff_allocates_it() -> None:
    pre = ImagePreprocessor(CONFIG, max_pixels=10**7)
    with pytest.raises(PayloadTooLarge, match="TIFF L 64x64"):
        pre.one(tiled_tiff(64, 16384))  # one tile would take 256 MiB (1 GiB as RGBA)


def test_extreme_aspect_ratio_within_the_limits_costs_little() -> None:
    # resize_shorter used to scale the whole image: 20 x 30000 → 256 x 384000 before the crop.
    config = ImagePreprocess(input="x", resize=(224, 224), resize_shorter=256)
    tall = encode(Image.new("L", (20, 30_000), 255), "PNG")
    start = time.perf_counter()
    out = ImagePreprocessor(config, max_pixels=4 * 10**7).one(tall)
    assert time.perf_counter() - start < 1.0
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_large_images_reduce_in_strips_to_the_same_answer(cat: Image.Image) -> None:
    big = cat.resize((2706, 1800), Image.Resampling.BICUBIC)  # reduced by 4, then resized
    pre = ImagePreprocessor(CONFIG, max_pixels=10**8)
    out = pre.one(encode(big, "PNG"))
    reference = reference_preprocess(encode(big, "PNG"))[0]
    assert np.abs(out - reference).mean() < 0.01


def test_png_text_chunks_are_capped() -> None:
    info = PngImagePlugin.PngInfo()
    for i in range(8):
        info.add_text(f"k{i}", "x" * 1_000_000, zip=True)  # 8 MB of text in a few KB
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "PNG", pnginfo=info)
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(InvalidRequest, match="text chunks"):
        ImagePreprocessor(CONFIG, max_pixels=10**7).one(buffer.getvalue())


def test_only_the_first_frame_of_an_animation_is_decoded() -> None:
    frames = [Image.new("RGB", (64, 64), (i, 255 - i, 0)) for i in range(0, 250, 2)]
    for fmt in ("GIF", "WEBP", "TIFF"):
        buffer = io.BytesIO()
        frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
        out = ImagePreprocessor(CONFIG, max_pixels=10**7).one(buffer.getvalue())
        np.testing.assert_allclose(out[1], 1.0, atol=0.02)  # green channel of frame 0


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP", "GIF", "BMP"])
def test_truncated_files_are_invalid(cat: Image.Image, fmt: str) -> None:
    data = encode(cat, fmt)
    with pytest.raises(InvalidRequest, match="image 0: cannot"):
        ImagePreprocessor(CONFIG, max_pixels=10**7).one(data[: len(data) // 2])


def test_defaults_match_the_server_settings() -> None:
    limits = LimitSettings()
    assert (limits.max_image_side, limits.max_image_decode_bytes) == (MAX_SIDE, MAX_DECODE_BYTES)


def rle8_bmp(width: int, height: int) -> bytes:
    """An RLE8 BMP made of one-pixel runs: Pillow decodes each run in Python."""
    pixels = (bytes([1, 7]) * width + b"\0\0") * height + b"\0\1"
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 0, 0, 256, 0)
    offset = 14 + len(header) + len(palette)
    return (
        b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + header + palette + pixels
    )


def test_rle_bmp_is_charged_for_its_python_decoder() -> None:
    pre = ImagePreprocessor(CONFIG, max_pixels=10**7)
    assert pre.one(rle8_bmp(300, 200)).shape == (3, 224, 224)
    start = time.perf_counter()
    with pytest.raises(PayloadTooLarge, match="BMP L 3000x3000"):
        pre.one(rle8_bmp(3000, 3000))  # took 3.4 s, holding the GIL
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("offset", "split"),
    [("floor", lambda margin: margin // 2), ("round", lambda margin: round(margin / 2))],
)
@pytest.mark.parametrize("size", [(333, 250), (250, 333), (301, 300), (640, 427)])
def test_resize_shorter_then_crop_equals_resizing_whole_then_cropping(
    offset: str, split: Callable[[int], int], size: tuple[int, int]
) -> None:
    # What Hugging Face processors (floor) and torchvision (round) compute: the whole image
    # resized, shorter side 256, longer side truncated, then the centre 224 x 224 cut out.
    noise = np.random.default_rng(size[0]).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    scale = 256 / min(size)
    whole = (max(256, int(size[0] * scale)), max(256, int(size[1] * scale)))
    left, top = split(whole[0] - 224), split(whole[1] - 224)
    resized = Image.fromarray(noise).resize(whole, Image.Resampling.BILINEAR)
    expected = np.asarray(resized.crop((left, top, left + 224, top + 224)), np.float32) / 255
    config = ImagePreprocess(
        input="x",
        resize=(224, 224),
        resize_shorter=256,
        crop_offset=offset,  # type: ignore[arg-type]
    )
    ours = ImagePreprocessor(config, max_pixels=10**7).one(buffer.getvalue())
    assert np.abs(ours.transpose(1, 2, 0) - expected).max() <= 1.5 / 255  # one grey level
