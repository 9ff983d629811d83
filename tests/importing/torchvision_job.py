"""Run by test_torch_import.py in ``.venv/import-torchvision`` (torch 2.14.1, torchvision
0.29.1): real torchvision transforms through the torch importer. Writes into ``OUT``:

* ``models/cnn``: a small CNN, trained here for a few steps to tell red, green and blue
  pictures apart, imported with ``save_model`` and a Flask-style pipeline (Resize, CenterCrop,
  ToTensor, Normalize); its parity check runs here, against the real torchvision;
* ``photos.npy`` (encoded images, as a client sends them) and ``expected.npy`` (the user's
  pipeline and CNN on them), which the test compares with the served answers;
* ``result.json``: versions, the parity report, the settings the v1 and v2 pipelines map to,
  the message of each refused pipeline, and how far the server's pixels are from torchvision's
  for photo sizes whose rounding differs.

    .venv/import-torchvision/bin/python tests/importing/torchvision_job.py OUT
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import transforms
from torchvision.transforms import v2

from infership.errors import ImportFailed
from infership.importing import save_model
from infership.importing.sources.torch_transforms import map_pipeline
from infership.processing.image import ImagePreprocessor
from infership.repository.manifest import ImagePreprocess

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
COLOURS = ("red", "green", "blue")


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.head = torch.nn.Linear(16, 3)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels).flatten(1))


def picture(width: int, height: int, colour: int, rng: np.random.Generator) -> bytes:
    """A smooth picture in which one channel dominates, as JPEG."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.empty((height, width, 3), dtype=np.float32)
    for channel in range(3):
        wave = np.sin(x / rng.uniform(6, 20) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(6, 20))
        base = 170.0 if channel == colour else 70.0
        pixels[..., channel] = base + 50 * wave
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def pipeline() -> transforms.Compose:
    # As a Flask handler writes it, at a small size so the test stays fast.
    return transforms.Compose(
        [
            transforms.Resize(64),
            transforms.CenterCrop(56),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )


def decoded(data: bytes, transform: Any) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        tensor: torch.Tensor = transform(image.convert("RGB"))
    return tensor


def trained(transform: Any) -> tuple[SmallCNN, list[bytes]]:
    """The CNN after 30 steps on 24 pictures; 6 held-out photos of sizes whose resize and
    crop round the same way in torchvision and the server (see ``odd_sizes``)."""
    rng = np.random.default_rng(0)
    sizes = [(85, 64), (64, 96), (72, 72)]
    train = [(picture(*sizes[i % 3], i % 3, rng), i % 3) for i in range(24)]
    photos = [picture(*sizes[i % 3], (i + 1) % 3, rng) for i in range(6)]
    torch.manual_seed(0)
    model = SmallCNN()
    x = torch.stack([decoded(data, transform) for data, _ in train])
    y = torch.tensor([label for _, label in train])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(30):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model, photos


def refusals(out: Path, model: SmallCNN, photos: list[bytes]) -> dict[str, str | None]:
    """The message each unmappable pipeline is refused with (None: it was mapped)."""
    tail = [transforms.ToTensor(), transforms.Normalize(MEAN, STD)]
    cases: dict[str, Any] = {
        "random_crop": [transforms.Resize(256), transforms.RandomCrop(224), *tail],
        "color_jitter": [transforms.Resize(64), transforms.CenterCrop(56),
                         transforms.ColorJitter(0.2, 0.2), *tail],
        "lambda": [transforms.Resize(64), transforms.CenterCrop(56),
                   transforms.Lambda(lambda image: image), *tail],
        "grayscale": [transforms.Grayscale(3), transforms.Resize(64), transforms.CenterCrop(56),
                      *tail],
        "resize_without_crop": [transforms.Resize(256), *tail],
        "crop_after_fixed_resize": [transforms.Resize((256, 320)), transforms.CenterCrop(224),
                                    *tail],
        "box_filter": [transforms.Resize(64, interpolation=transforms.InterpolationMode.BOX),
                       transforms.CenterCrop(56), *tail],
        "max_size": [transforms.Resize(64, max_size=100), transforms.CenterCrop(56), *tail],
        "normalize_before_tensor": [transforms.Resize(64), transforms.CenterCrop(56),
                                    transforms.Normalize(MEAN, STD), transforms.ToTensor()],
        "no_tensor": [transforms.Resize(64), transforms.CenterCrop(56)],
    }  # fmt: skip
    messages: dict[str, str | None] = {}
    for name, steps in cases.items():
        try:
            save_model(
                model, out / "refused", name, preprocess=transforms.Compose(steps),
                example_inputs=photos[:2],
            )  # fmt: skip
        except ImportFailed as exc:
            messages[name] = str(exc)
        else:
            messages[name] = None
    return messages


def mapped() -> dict[str, dict[str, Any]]:
    """The settings the same pipeline maps to in torchvision's v1 and v2 spellings."""
    v2_pipeline = v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(64),
            v2.CenterCrop(56),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    v1 = map_pipeline(pipeline()).settings("pixels")
    try:
        v2_settings = map_pipeline(v2_pipeline).settings("pixels")
    except ImportFailed as exc:  # ToImage before Resize: a tensor resized, not a picture
        v2_settings = {"refused": str(exc)}
    v2_in_order = v2.Compose(
        [
            v2.Resize(64),
            v2.CenterCrop(56),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    unscaled = v2.Compose(
        [v2.Resize(64), v2.CenterCrop(56), v2.ToImage(), v2.ToDtype(torch.float32)]
    )
    return {
        "v1": v1,
        "v2": map_pipeline(v2_in_order).settings("pixels"),
        "v2_resizing_tensors": v2_settings,
        "v2_unscaled": map_pipeline(unscaled).settings("pixels"),
    }


def odd_sizes() -> dict[str, float]:
    """Largest |server - torchvision| per photo size, in normalised pixel units, for sizes
    whose long side and crop offset the two round differently."""
    transform = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), *pipeline().transforms[2:]]
    )
    config = ImagePreprocess.model_validate(map_pipeline(transform).settings("x"))
    server = ImagePreprocessor(config, max_pixels=1 << 30)
    rng = np.random.default_rng(1)
    worst = {}
    for width, height in [(333, 250), (250, 333), (300, 301)]:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        channels = [127 + 120 * np.sin(x / rng.uniform(8, 40)) * np.cos(y / 17) for _ in range(3)]
        buffer = io.BytesIO()
        Image.fromarray(np.stack(channels, -1).astype(np.uint8)).save(buffer, "PNG")
        data = buffer.getvalue()
        difference = server.batch([data])[0] - decoded(data, transform).numpy()
        worst[f"{width}x{height}"] = float(np.abs(difference).max())
    return worst


def main(out: Path) -> None:
    transform = pipeline()
    model, photos = trained(transform)
    report = save_model(
        model, out / "models", "cnn", preprocess=transform, example_inputs=photos,
        labels=COLOURS,
    )  # fmt: skip
    model.eval()
    with torch.no_grad():
        expected = model(torch.stack([decoded(data, transform) for data in photos])).numpy()
    np.save(out / "photos.npy", np.array(photos, dtype=object), allow_pickle=True)
    np.save(out / "expected.npy", expected)
    result = {
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
        "parity": report.parity.as_dict(),
        "notes": list(report.notes),
        "expected_labels": [COLOURS[i] for i in expected.argmax(axis=1)],
        "mapped": mapped(),
        "refused": refusals(out, model, photos),
        "odd_sizes": odd_sizes(),
    }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(str(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
