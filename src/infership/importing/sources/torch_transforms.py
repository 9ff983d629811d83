"""A torchvision transform pipeline → model.yaml ``preprocess.image``, or a refusal naming the
transform that cannot be mapped.

The server's image pre-processing decodes an image, resizes it (straight to a size, or the
shorter side then a centre crop), scales the 8-bit values and normalises them per channel. That
is exactly what the usual serving pipeline does::

    transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224),
        transforms.ToTensor(), transforms.Normalize(mean, std),
    ])

so such a pipeline is mapped step by step; anything else (random augmentations, a ``Lambda``,
padding, colour changes) is refused, naming the transform and why, rather than served
differently from how the model was trained.

Transforms are recognised by class name and attributes, never by importing torchvision: the
classes of ``torchvision.transforms`` and ``torchvision.transforms.v2`` share their names and
the attributes read here. The parity check then runs the user's own pipeline on the example
images and compares, so a mapping that is wrong anywhere shows up as a failed import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infership.errors import ImportFailed

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
"""The resampling filters ``preprocess.image`` has: Pillow's, as torchvision uses on images."""

_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
"""Pillow's integer filter codes, which old pipelines pass as ``interpolation``."""

_RANDOM = "a random augmentation, for training only: serving must give one answer per image"
_NO_EQUIVALENT = (
    "preprocess.image has no equivalent (it resizes, centre-crops, scales and normalises); "
    "move it into the model's forward() or into a python hook (docs/python-models.md)"
)
_WHY: dict[str, str] = {
    "Lambda": "it runs arbitrary Python that cannot be mapped; " + _NO_EQUIVALENT.split("; ")[1],
    # Random without "Random" in the name (those that have it are caught by the prefix).
    **dict.fromkeys(
        (
            "ColorJitter",
            "AutoAugment",
            "RandAugment",
            "TrivialAugmentWide",
            "AugMix",
            "GaussianBlur",
            "GaussianNoise",
            "ElasticTransform",
            "ScaleJitter",
        ),
        _RANDOM,
    ),
}


@dataclass
class ImageMapping:
    """The pipeline as ``preprocess.image`` settings, built step by step."""

    resize: tuple[int, int] | None = None
    resize_shorter: int | None = None
    crop: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    scale: float | None = None
    """Set once the image is a float tensor: 1/255 (ToTensor) or 1 (ToDtype without scaling)."""
    uint8_tensor: bool = False
    """After PILToTensor/ToImage: a uint8 tensor that still needs converting to floats."""
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    steps: list[str] = field(default_factory=list)

    def settings(self, model_input: str) -> dict[str, Any]:
        """``preprocess.image`` for ``model_input``; ImportFailed if the pipeline is unfinished."""
        if self.scale is None:
            raise ImportFailed(
                "preprocess: the transform pipeline does not end with a float tensor (no "
                "ToTensor, or ConvertImageDtype/ToDtype after PILToTensor/ToImage); the model "
                "takes float tensors"
            )
        size = self._size()
        settings: dict[str, Any] = {
            "input": model_input,
            "public_input": "image",
            "color": "RGB",
            "resize": list(size),
            "interpolation": self.interpolation,
            "scale": self.scale,
            "mean": list(self.mean or (0.0, 0.0, 0.0)),
            "std": list(self.std or (1.0, 1.0, 1.0)),
            "layout": "NCHW",
        }
        if self.resize_shorter is not None:
            settings["resize_shorter"] = self.resize_shorter
            settings["crop_offset"] = "round"  # CenterCrop rounds half the margin
        return settings

    def _size(self) -> tuple[int, int]:
        if self.resize_shorter is not None:
            if self.crop is None:
                raise ImportFailed(
                    f"preprocess: Resize({self.resize_shorter}) without a CenterCrop after it "
                    "gives images whose size depends on their aspect ratio; the model's input "
                    "needs one size: add CenterCrop, or Resize to a (height, width)"
                )
            return self.crop
        if self.resize is None:
            raise ImportFailed(
                "preprocess: the transform pipeline has no Resize, so the tensor's size would "
                "be the uploaded image's; add Resize (and CenterCrop)"
            )
        return self.resize


def steps_of(pipeline: Any) -> list[object]:
    """The transforms of a ``Compose`` (v1 or v2), an ``nn.Sequential`` of v2 transforms, or a
    list; a lone transform is a pipeline of one."""
    if isinstance(pipeline, list | tuple):
        return list(pipeline)
    name = type(pipeline).__name__
    if name == "Compose" and isinstance(getattr(pipeline, "transforms", None), list | tuple):
        return list(pipeline.transforms)
    if name == "Sequential" and hasattr(pipeline, "__iter__"):
        return list(pipeline)
    return [pipeline]


def map_pipeline(pipeline: object) -> ImageMapping:
    """Map every step onto ``ImageMapping``; ImportFailed names the first that cannot be."""
    mapping = ImageMapping()
    for step in steps_of(pipeline):
        if type(step).__name__ in ("Compose", "Sequential"):
            for inner in steps_of(step):  # a nested pipeline is the same steps in order
                _map_step(mapping, inner)
        else:
            _map_step(mapping, step)
    return mapping


def _map_step(mapping: ImageMapping, step: object) -> None:
    name = type(step).__name__
    handler = _HANDLERS.get(name)
    if handler is None:
        why = _WHY.get(name) or (_RANDOM if name.startswith("Random") else _NO_EQUIVALENT)
        raise ImportFailed(f"preprocess: {_show(step)} cannot be mapped: {why}")
    handler(mapping, step)
    mapping.steps.append(name)


def _resize(mapping: ImageMapping, step: Any) -> None:
    if mapping.resize is not None or mapping.resize_shorter is not None or mapping.crop:
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped: only one Resize, before any "
            "CenterCrop, is supported"
        )
    _before_tensor(mapping, step)
    if getattr(step, "max_size", None) is not None:
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped: max_size (a cap on the longer side) "
            "has no equivalent in preprocess.image"
        )
    size = step.size
    if isinstance(size, int):
        mapping.resize_shorter = size
    elif isinstance(size, list | tuple) and len(size) == 1:
        mapping.resize_shorter = int(size[0])
    elif isinstance(size, list | tuple) and len(size) == 2:
        mapping.resize = (int(size[0]), int(size[1]))
    else:
        raise ImportFailed(f"preprocess: {_show(step)} cannot be mapped: size {size!r}")
    mapping.interpolation = _interpolation(step)


def _center_crop(mapping: ImageMapping, step: Any) -> None:
    _before_tensor(mapping, step)
    size = step.size
    crop = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(crop) == 1:
        crop = (crop[0], crop[0])
    if mapping.crop is not None or len(crop) != 2:
        raise ImportFailed(f"preprocess: {_show(step)} cannot be mapped: only one CenterCrop")
    height, width = crop
    if mapping.resize is not None:
        if (height, width) == mapping.resize:
            mapping.crop = (height, width)  # cropping to the size it has: nothing to do
            return
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped after Resize to {mapping.resize}: "
            "preprocess.image centre-crops only after resizing the shorter side (Resize(int)); "
            "resize straight to the crop's size instead"
        )
    if mapping.resize_shorter is None:
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped without a Resize before it: it would "
            "crop the uploaded image at its own resolution"
        )
    if max(height, width) > mapping.resize_shorter:
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped: the crop is larger than the resized "
            f"shorter side ({mapping.resize_shorter}), so torchvision would pad it with black"
        )
    mapping.crop = (height, width)


def _to_tensor(mapping: ImageMapping, step: Any) -> None:
    _before_tensor(mapping, step)
    mapping.scale = 1 / 255


def _pil_to_tensor(mapping: ImageMapping, step: Any) -> None:
    _before_tensor(mapping, step)
    mapping.uint8_tensor = True


def _to_dtype(mapping: ImageMapping, step: Any) -> None:
    """``ConvertImageDtype(float)`` and v2 ``ToDtype(float, scale=...)`` after a uint8 tensor."""
    if not mapping.uint8_tensor or mapping.scale is not None:
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped here: it must follow PILToTensor or "
            "ToImage (a uint8 tensor)"
        )
    dtype = step.dtype
    if isinstance(dtype, dict):  # v2: {tv_tensors.Image: torch.float32, ...}
        dtype = next(iter(dtype.values()), None)
    if str(dtype) not in ("torch.float32", "torch.float"):
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped: preprocess.image makes float32 "
            f"tensors, not {dtype}"
        )
    # ConvertImageDtype always rescales integers to [0, 1]; v2's ToDtype only when asked.
    scales = type(step).__name__ == "ConvertImageDtype" or bool(getattr(step, "scale", False))
    mapping.scale = 1 / 255 if scales else 1.0


def _normalize(mapping: ImageMapping, step: Any) -> None:
    if mapping.scale is None or mapping.mean is not None:
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped: one Normalize, after the image is a "
            "float tensor, is supported"
        )
    mean = tuple(float(m) for m in step.mean)
    std = tuple(float(s) for s in step.std)
    # torchvision broadcasts one value over the channels, as model.yaml spells out three.
    mapping.mean = mean * 3 if len(mean) == 1 else mean
    mapping.std = std * 3 if len(std) == 1 else std
    if len(mapping.mean) != 3 or len(mapping.std) != 3:
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped: RGB images need 3 means and 3 stds"
        )


def _before_tensor(mapping: ImageMapping, step: object) -> None:
    if mapping.scale is not None or mapping.uint8_tensor:
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped after the image became a tensor: "
            "preprocess.image resizes and crops the decoded image, before scaling"
        )


def _interpolation(step: Any) -> str:
    mode = getattr(step, "interpolation", "bilinear")
    value = _PIL_FILTERS.get(mode, str(mode)) if isinstance(mode, int) else mode
    value = str(getattr(value, "value", value)).lower()
    if value not in _INTERPOLATIONS:
        raise ImportFailed(
            f"preprocess: {_show(step)} cannot be mapped: interpolation {value!r}; "
            f"preprocess.image has {', '.join(_INTERPOLATIONS)}"
        )
    return value


def _show(step: object) -> str:
    """The transform as its repr shows it (``Resize(size=256, ...)``), kept short."""
    try:
        text = " ".join(repr(step).split())
    except Exception:  # a user object's __repr__ may fail; its class name still says enough
        text = type(step).__name__
    return text if len(text) <= 120 else f"{text[:117]}..."


_HANDLERS = {
    "Resize": _resize,
    "CenterCrop": _center_crop,
    "ToTensor": _to_tensor,
    "PILToTensor": _pil_to_tensor,
    "ToImage": _pil_to_tensor,
    "ConvertImageDtype": _to_dtype,
    "ToDtype": _to_dtype,
    "Normalize": _normalize,
}
