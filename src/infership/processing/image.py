"""Encoded image bytes → a normalised float tensor, as model.yaml's ``preprocess.image`` says.

Runs in a thread pool: Pillow releases the GIL while decoding and resizing. JPEG draft mode lets
libjpeg decode large photos at a reduced scale (1/2, 1/4, 1/8) when that is still at least the
target size, which is several times faster than decoding every pixel and then throwing most away.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from infership.errors import InvalidRequest, PayloadTooLarge
from infership.repository.manifest import ImagePreprocess
from infership.types import Array

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
"""Formats we decode. Pillow knows more (EPS would run Ghostscript); clients don't need them."""

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class ImagePreprocessor:
    """Decodes and normalises images for one model input.

    >>> pre = ImagePreprocessor(config, max_pixels=40_000_000)
    >>> pre.batch([jpeg_bytes]).shape
    (1, 3, 224, 224)
    """

    def __init__(self, config: ImagePreprocess, *, max_pixels: int) -> None:
        self.config = config
        self.max_pixels = max_pixels
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

    def batch(self, images: Sequence[bytes]) -> Array:
        """Preprocess several images into one [n, ...] float32 tensor."""
        out = np.empty((len(images), *self.sample_shape), dtype=np.float32)
        for i, data in enumerate(images):
            out[i] = self.one(data, index=i)
        return out

    def one(self, data: bytes, *, index: int = 0) -> Array:
        """Preprocess one image. Raises InvalidRequest / PayloadTooLarge naming the problem."""
        image = self._open(data, index)
        try:
            image = self._fit(image)
            pixels = np.asarray(image, dtype=np.float32)
        except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
            # Pillow reports truncated and corrupt files this way, mid-decode.
            raise InvalidRequest(f"image {index}: cannot decode: {exc}") from exc
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        pixels *= self._gain
        pixels += self._offset
        return pixels.transpose(2, 0, 1) if self.config.layout == "NCHW" else pixels

    def _open(self, data: bytes, index: int) -> Image.Image:
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
        except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
            # Pillow's format plugins report corrupt headers in all of these ways.
            raise InvalidRequest(f"image {index}: cannot read: {exc}") from exc
        width, height = image.size
        if width * height > self.max_pixels:
            raise PayloadTooLarge(
                f"image {index} is {width}x{height} = {width * height} pixels, over the limit "
                f"of {self.max_pixels}"
            )
        return image

    def _fit(self, image: Image.Image) -> Image.Image:
        target = self._size
        if self.config.resize_shorter is not None:
            side = self.config.resize_shorter
            scale = side / min(image.size)
            target = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
        if image.format == "JPEG":
            image.draft(self.config.color, target)
        image = image.convert(self.config.color)
        if image.size != target:
            image = image.resize(target, self._resample)
        if self.config.resize_shorter is not None:
            width, height = self._size
            left, top = (image.width - width) // 2, (image.height - height) // 2
            image = image.crop((left, top, left + width, top + height))
        return image
