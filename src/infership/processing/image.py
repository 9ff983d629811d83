"""Encoded image bytes → a normalised float tensor, as model.yaml's ``preprocess.image`` says.

Runs in a thread pool: Pillow releases the GIL while decoding and resizing. JPEG draft mode lets
libjpeg decode large photos at a reduced scale (1/2, 1/4, 1/8) when that is still at least the
target size, which is several times faster than decoding every pixel and then throwing most away.

What an image may cost is bounded before a byte of it is decoded, from its header alone:

* pixels (``max_pixels``) and the longer side (``max_side``: per-row work and buffers);
* the memory its decoding needs at the scale used (``max_decode_bytes``): Pillow's pixel buffer
  plus the decoder's own (progressive JPEG coefficients, WebP canvases, TIFF strips or tiles).

After decoding, nothing is ever as large as the decoded image again: mode conversion runs in
strips, each box-reduced (``Image.reduce``) on the way to an image at most about twice the
target, and only the part a centre-crop keeps is resized. Memory and time then scale with the
decoded image, never with its aspect ratio or the reduction factor.

Colour: every mode Pillow opens becomes 8-bit RGB or L as browsers show it: transparent pixels
over white, 16-bit samples scaled to 8 bits, and the EXIF orientation applied. 32-bit integer and
float samples (modes ``I``, ``F``) have no agreed brightness range and are refused.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageFile, PngImagePlugin, UnidentifiedImageError

from infership.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from infership.processing.base import Preprocessor, encoded_items
from infership.repository.manifest import ImagePreprocess
from infership.types import Array, TensorSpec

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""Formats we decode. Pillow knows more (EPS would run Ghostscript); clients don't need them."""

MAX_SIDE = 32_768
"""Default longest side (``LimitSettings.max_image_side``)."""

MAX_DECODE_BYTES = 40 * 1024 * 1024
"""Default decode memory per image (``LimitSettings.max_image_decode_bytes``)."""

# Pillow keeps up to 64 MiB of decompressed PNG text chunks per image by default: a 64 KiB
# file of zTXt chunks would cost as much as a 16-megapixel decode. We never read them.
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 1024 * 1024

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)
"""How Pillow's format plugins report corrupt and truncated files."""

_SUPPORT = {"nearest": 0.5, "bilinear": 1.0, "bicubic": 2.0, "lanczos": 3.0}
"""Each filter's reach, in source pixels per output pixel (Pillow's filter supports)."""
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

_REDUCING_GAP = 2
"""Box-reduce until the image is at most this many times the target, then filter (Pillow's
``reducing_gap=2``): the filtered resize stays anti-aliased while its kernels stay small."""

_STRIP_BYTES = 2 * 1024 * 1024
"""Rows converted at once: bounds the copies mode conversion makes."""

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation → the transpose that shows the image upright (``ImageOps.exif_transpose``)."""

_Box = tuple[float, float, float, float]


class ImagePreprocessor(Preprocessor):
    """Decodes and normalises images for one model input (the ``image`` BYTES input, at most
    ``max_images`` a request).

    >>> pre = ImagePreprocessor(config, max_pixels=40_000_000)
    >>> pre.batch([jpeg_bytes]).shape
    (1, 3, 224, 224)
    """

    def __init__(
        self,
        config: ImagePreprocess,
        *,
        max_pixels: int,
        max_side: int = MAX_SIDE,
        max_decode_bytes: int = MAX_DECODE_BYTES,
        max_images: int = 64,
    ) -> None:
        self.config = config
        self.takes = (TensorSpec(config.public_input, "BYTES", (-1,)),)
        self.feeds = (config.input,)
        self.max_images = max_images
        self.max_pixels = max_pixels
        self.max_side = max_side
        self.max_decode_bytes = max_decode_bytes
        self._size = (config.resize[1], config.resize[0])  # Pillow wants (width, height)
        self._resample = _RESAMPLE[config.interpolation]
        # (x * scale - mean) / std folded into one multiply-add per pixel.
        std = np.asarray(config.std, dtype=np.float32)
        self._gain = np.float32(config.scale) / std
        self._offset = -np.asarray(config.mean, dtype=np.float32) / std

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one preprocessed image, without the batch axis."""
        height, width = self.config.resize
        channels = 3 if self.config.color == "RGB" else 1
        if self.config.layout == "NCHW":
            return (channels, height, width)
        return (height, width, channels)

    def check(self, inputs: Mapping[str, Array], max_rows: int, owner: str) -> None:
        # Refused before decoding: the limits are known and decoding is the costly part.
        name = self.config.public_input
        encoded_items(name, inputs[name], min(self.max_images, max_rows), "images", owner)

    def __call__(self, inputs: dict[str, Array]) -> dict[str, Array]:
        name = self.config.public_input
        items = encoded_items(name, inputs[name], len(inputs[name]), "images")
        return {self.config.input: self.batch(items)}

    def batch(self, images: Sequence[bytes]) -> Array:
        """Preprocess several images into one [n, ...] float32 tensor."""
        out = np.empty((len(images), *self.sample_shape), dtype=np.float32)
        for i, data in enumerate(images):
            out[i] = self.one(data, index=i)
        return out

    def one(self, data: bytes, *, index: int = 0) -> Array:
        """Preprocess one image. Raises InvalidRequest / PayloadTooLarge /
        UnsupportedMediaType naming the image and the problem."""
        opened = self._open(data, index)
        try:
            pixels = np.asarray(self._decode(opened, data, index), dtype=np.float32)
        except _DECODE_ERRORS as exc:
            # Pillow reports truncated and corrupt files this way, mid-decode.
            raise InvalidRequest(f"image {index}: cannot decode: {exc}") from exc
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        pixels *= self._gain
        pixels += self._offset
        return pixels.transpose(2, 0, 1) if self.config.layout == "NCHW" else pixels

    def _open(self, data: bytes, index: int) -> ImageFile.ImageFile:
        if not data:
            raise InvalidRequest(f"image {index} is empty")
        try:
            with warnings.catch_warnings():
                # We enforce our own, lower pixel limit just below; Pillow's warning is noise.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError:
            raise InvalidRequest(
                f"image {index} is not an image format we read ({', '.join(FORMATS)})"
            ) from None
        except Image.DecompressionBombError as exc:
            raise PayloadTooLarge(f"image {index}: {exc}") from exc
        except _DECODE_ERRORS as exc:
            raise InvalidRequest(f"image {index}: cannot read: {exc}") from exc
        width, height = image.size
        if width * height > self.max_pixels:
            raise PayloadTooLarge(
                f"image {index} is {width}x{height} = {width * height} pixels, over the limit "
                f"of {self.max_pixels}"
            )
        if max(width, height) > self.max_side:
            raise PayloadTooLarge(
                f"image {index} is {width}x{height}: its longer side is over the limit of "
                f"{self.max_side} pixels"
            )
        if image.mode in ("I", "F"):
            raise UnsupportedMediaType(
                f"image {index} has 32-bit {'float' if image.mode == 'F' else 'integer'} "
                "samples, whose brightness range is not defined; send 8 or 16 bits per sample"
            )
        return image

    def _decode(self, image: ImageFile.ImageFile, data: bytes, index: int) -> Image.Image:
        """Header-checked image → the final 8-bit RGB or L image at the target size."""
        # 1. JPEG: ask libjpeg for the smallest scale still at least the target, in the
        #    orientation the file is stored in (the EXIF header is read already).
        full_size = image.size
        if image.format == "JPEG":
            orientation = _orientation(image)
            upright = _stored_size(image.size, orientation)
            image.draft(self.config.color, _stored_size(self._scaled_size(upright), orientation))
        # 2. Refuse before decoding what would cost more memory than allowed.
        cost = _decode_bytes(image, full_size, data) + 4 * min(
            image.width * image.height, 4 * _REDUCING_GAP**2 * self._size[0] * self._size[1]
        )
        if cost > self.max_decode_bytes:
            raise PayloadTooLarge(
                f"image {index} ({image.format} {image.mode} {full_size[0]}x{full_size[1]}) "
                f"would need about {cost // 2**20} MiB to decode, over the limit of "
                f"{self.max_decode_bytes // 2**20} MiB"
            )
        image.load()
        # 3. Work in the stored orientation on the part a centre-crop keeps; turn the small
        #    result upright at the end rather than the large decoded image.
        orientation = _orientation(image)
        upright = _stored_size(image.size, orientation)  # the image as it is shown
        box = _stored_box(self._crop_box(upright), upright, orientation)
        target = _stored_size(self._size, orientation)
        reduced, box = self._reduce(image, box, target)
        out = reduced.resize(target, self._resample, box=box)
        return out.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else out

    def _scaled_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """The whole image's size once resized (before any centre-crop)."""
        if self.config.resize_shorter is None:
            return self._size
        side = self.config.resize_shorter
        scale = side / min(size)
        # The longer side truncates, as torchvision's Resize and Hugging Face's processors do:
        # rounding would move a centre-crop by half a pixel against the model's training.
        return (max(side, int(size[0] * scale)), max(side, int(size[1] * scale)))

    def _crop_box(self, size: tuple[int, int]) -> _Box:
        """The region of an upright image of ``size`` that ends up in the output."""
        if self.config.resize_shorter is None:
            return (0.0, 0.0, float(size[0]), float(size[1]))
        # Resizing to ``scaled`` and cropping the centre is resizing this box of the original.
        scaled = self._scaled_size(size)
        margin = (scaled[0] - self._size[0], scaled[1] - self._size[1])
        if self.config.crop_offset == "round":
            left, top = round(margin[0] / 2), round(margin[1] / 2)
        else:
            left, top = margin[0] // 2, margin[1] // 2
        sx, sy = size[0] / scaled[0], size[1] / scaled[1]
        return (left * sx, top * sy, (left + self._size[0]) * sx, (top + self._size[1]) * sy)

    def _reduce(
        self, image: Image.Image, box: _Box, target: tuple[int, int]
    ) -> tuple[Image.Image, _Box]:
        """Convert ``box`` of ``image`` to 8-bit RGB/L, box-reduced by whole factors while it
        stays at least ``_REDUCING_GAP`` times ``target``; returns it and ``box`` within it."""
        # Float rounding must not put the box a hair outside the image.
        box = (
            max(0.0, box[0]),
            max(0.0, box[1]),
            min(image.width, box[2]),
            min(image.height, box[3]),
        )
        fx = max(1, int((box[2] - box[0]) / target[0] / _REDUCING_GAP))
        fy = max(1, int((box[3] - box[1]) / target[1] / _REDUCING_GAP))
        # The region read: the box widened by the filter's reach (so that a crop's edge pixels
        # are filtered with their neighbours, as when resizing the whole image and then
        # cropping), then to whole reduction blocks.
        reach = _SUPPORT[self.config.interpolation]
        mx = math.ceil(reach * max(1.0, (box[2] - box[0]) / fx / target[0]) * fx) + fx
        my = math.ceil(reach * max(1.0, (box[3] - box[1]) / fy / target[1]) * fy) + fy
        x0, y0 = max(0, int(box[0]) - mx) // fx * fx, max(0, int(box[1]) - my) // fy * fy
        x1 = min(image.width, math.ceil((box[2] + mx) / fx) * fx)
        y1 = min(image.height, math.ceil((box[3] + my) / fy) * fy)
        out = Image.new(self.config.color, (-(-(x1 - x0) // fx), -(-(y1 - y0) // fy)))
        rows = max(fy, _STRIP_BYTES // (4 * (x1 - x0)) // fy * fy)
        for top in range(y0, y1, rows):
            strip = _to_8bit(image.crop((x0, top, x1, min(y1, top + rows))), self.config.color)
            if (fx, fy) != (1, 1):
                strip = strip.reduce((fx, fy))
            out.paste(strip, (0, (top - y0) // fy))
        inner = ((box[0] - x0) / fx, (box[1] - y0) / fy, (box[2] - x0) / fx, (box[3] - y0) / fy)
        return out, inner


def _to_8bit(image: Image.Image, color: str) -> Image.Image:
    """Any mode Pillow opens (but I and F) → ``color`` (RGB or L), as a browser would show it."""
    if image.mode.startswith("I;16"):
        # 16-bit samples: 65535 is white. Pillow's own conversion clips at 255 instead.
        wide = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8)).convert(color)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        # Transparent pixels are shown over white: the colour stored under them is arbitrary
        # (often black) and never seen. Premultiplied La has no direct route to RGBA.
        rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    if image.mode == "LAB" and color == "L":
        image = image.convert("RGB")  # Pillow has no LAB → L
    return image if image.mode == color else image.convert(color)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1–8), 1 when absent or unreadable (as browsers treat it)."""
    try:
        value = image.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _stored_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """``size`` as stored in a file with this orientation: swapped when it turns by 90°."""
    return (size[1], size[0]) if orientation >= 5 else size


def _stored_box(box: _Box, upright: tuple[int, int], orientation: int) -> _Box:
    """Map a box of the upright image to the same pixels in the stored image."""
    width, height = upright
    x0, y0, x1, y1 = box
    if orientation in (2, 3, 6, 7):  # mirrored left-right as shown
        x0, x1 = width - x1, width - x0
    if orientation in (3, 4, 7, 8):  # mirrored top-bottom as shown
        y0, y1 = height - y1, height - y0
    return (y0, x0, y1, x1) if orientation >= 5 else (x0, y0, x1, y1)


_PIXEL_BYTES = {"1": 2, "L": 2, "P": 2}
"""Bytes each decoded pixel is counted for; every other mode counts 4. Pillow keeps 1, L and P
in one byte, but decoding them costs as much time as two (the budget bounds time too); 16-bit
modes take two in Pillow and four more briefly to convert."""


def _decode_bytes(image: ImageFile.ImageFile, full_size: tuple[int, int], data: bytes) -> int:
    """Memory to decode ``image`` at its (draft) size: Pillow's buffer, its row pointers and
    what the format's decoder allocates on top (``full_size`` is the size before draft)."""
    width, height = image.size
    pixels = width * height
    per_pixel = _PIXEL_BYTES.get(image.mode, 4)
    if image.format == "PNG" and "16" in str(image.tile[0].args if image.tile else ""):
        per_pixel = max(per_pixel, 2 * len(image.getbands()))  # inflated 16-bit samples
    total = pixels * per_pixel + 8 * height
    full_pixels = full_size[0] * full_size[1]
    if image.format == "JPEG" and _multi_scan(image, data):
        # Progressive and multi-scan files keep every DCT coefficient (2 bytes per sample,
        # at full size whatever the draft scale) until the last scan.
        layers = getattr(image, "layer", [])
        hmax = max((layer[1] for layer in layers), default=1) or 1
        vmax = max((layer[2] for layer in layers), default=1) or 1
        samples = sum(layer[1] * layer[2] for layer in layers) / (hmax * vmax) or 4
        total += int(2 * samples * full_pixels)
    elif image.format == "WEBP":
        # libwebp's animation decoder composes into two RGBA canvases, then hands a copy over.
        total += 12 * pixels
    elif image.format == "TIFF":
        # Compressed files go through libtiff, which Pillow hands a copy of the whole file
        # and which reads a strip or tile at a time; Pillow reads uncompressed ones itself.
        if image.info.get("compression", "raw") != "raw":
            total += _tiff_block_bytes(image) + len(data)
    elif image.format == "BMP" and image.info.get("compression") in (1, 2):
        # Pillow decodes RLE8/RLE4 in Python, about 0.4 µs a run (each two bytes of the file):
        # charged by time, 64 bytes a run, so 40 MiB means about 0.3 s, like the others.
        total += pixels + 64 * min(pixels, len(data) // 2)
    return total


def _multi_scan(image: Image.Image, data: bytes) -> bool:
    """Whether a JPEG needs a whole-image coefficient buffer: progressive, or a first scan
    that carries fewer components than the frame (sequential but not interleaved)."""
    if image.info.get("progressive"):
        return True
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return True  # not where a marker must be: assume the worst
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: Ls (2 bytes), then Ns
            return pos + 4 >= len(data) or data[pos + 4] < len(getattr(image, "layer", ()))
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return True


def _tiff_block_bytes(image: Image.Image) -> int:
    """libtiff reads one strip or tile at a time into a buffer of its own (RGBA when it
    converts colour itself): the largest such block, in bytes."""
    tags = getattr(image, "tag_v2", {})
    width, height = image.size
    if 322 in tags and 323 in tags:  # TileWidth, TileLength
        block = int(tags[322]) * int(tags[323])
    else:
        block = width * min(height, int(tags.get(278, height)))  # RowsPerStrip
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    per_pixel = max(4, -(-sum(int(b) for b in bits) // 8))
    return block * per_pixel
