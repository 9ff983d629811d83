#!/usr/bin/env python3
"""Generate the pure-Python example: a scikit-learn digit classifier as ``runtime: python``.

Writes ``--out``/digits/ (default under ``build/examples``):

* ``1/digits.py``  the class ``DigitClassifier`` (src/infership/examples/python/digits/):
  feature code as ``preprocess``, the pipeline's probabilities as ``predict``;
* ``1/model.skops``  the fitted pipeline (StandardScaler, then LogisticRegression), in skops'
  format, which loads only types it trusts, where a pickle would run whatever it holds;
* ``1/requirements.txt``  scikit-learn and skops, pinned to the versions that wrote the file;
* ``model.yaml``  ``runtime: python`` in two worker processes, batching, sha256 of each file;
* ``evaluation.json``  the held-out split, the accuracy measured on it and every prediction
  (the tests check that the server answers the same).

The data is scikit-learn's own ``load_digits`` (1,797 8x8 images, shipped in the package);
30 % is held out, stratified, with a fixed seed, and the fit is deterministic. Training uses
the module's own ``features``, so the server computes exactly what the model was fitted on.
It takes a few seconds and is cached::

    .venv/bin/python scripts/export_digits_example.py --out build/examples
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import shutil
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = REPO_ROOT / "src/infership/examples/python/digits"
NAME = "digits"
SEED = 0
TEST_SIZE = 0.3


def load_module() -> Any:
    spec = importlib.util.spec_from_file_location("digits", SOURCE / "digits.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images, test images, train labels, test labels: the tests call this too."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    parts = train_test_split(
        data.images, data.target, test_size=TEST_SIZE, random_state=SEED, stratify=data.target
    )
    return tuple(np.asarray(p) for p in parts)  # type: ignore[return-value]


def pipeline() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def train(target: Path) -> dict[str, Any]:
    """Fit, save ``1/model.skops``, reload it as the server will; the evaluation."""
    import skops.io

    module = load_module()
    train_x, test_x, train_y, test_y = split()
    raw = pipeline().fit(train_x.reshape(len(train_x), -1), train_y)
    raw_accuracy = float((raw.predict(test_x.reshape(len(test_x), -1)) == test_y).mean())
    model = pipeline().fit(module.features(train_x), train_y)
    path = target / "1" / "model.skops"
    skops.io.dump(model, path)
    untrusted = skops.io.get_untrusted_types(file=path)
    if untrusted:
        sys.exit(f"{path}: skops would not trust {untrusted}")
    served = module.DigitClassifier(path.parent, {})
    outputs = served.predict(served.preprocess({"image": test_x.astype(np.float32)}))
    accuracy = float((outputs["digit"] == test_y).mean())
    if not np.array_equal(outputs["digit"], model.predict(module.features(test_x))):
        sys.exit("the reloaded model does not predict what the fitted one does")
    return {
        "dataset": "sklearn.datasets.load_digits",
        "split": {"test_size": TEST_SIZE, "random_state": SEED, "stratify": True},
        "train_rows": len(train_y),
        "test_rows": len(test_y),
        "test_accuracy": accuracy,
        "test_errors": int((outputs["digit"] != test_y).sum()),
        "raw_pixels_test_accuracy": raw_accuracy,
        "test_predictions": outputs["digit"].tolist(),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp() -> str:
    """Changes when this script, the module or the packages change: the cache key."""
    parts = [Path(__file__), SOURCE / "digits.py", SOURCE / "requirements.txt"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in parts)).hexdigest()[:16]
    packages = " ".join(f"{p}=={version(p)}" for p in ("scikit-learn", "skops", "numpy"))
    return f"{digest} {packages}"


def manifest(target: Path) -> dict[str, Any]:
    files = ("1/digits.py", "1/model.skops", "1/requirements.txt")
    return {
        "description": "Handwritten digits (scikit-learn load_digits, 8x8, ink 0-16): feature "
        "code in Python, then a scikit-learn pipeline saved with skops",
        "runtime": "python",
        "python": {
            "module": "digits.py",
            "class": "DigitClassifier",
            # The feature code holds the GIL: one worker process per core.
            "execution": "process",
            "workers": 2,
        },
        "batching": {"max_batch_size": 64, "max_queue_delay_ms": 0, "max_queue_size": 128},
        "sha256": {name: sha256(target / name) for name in files},
    }


def write_repository(out: Path) -> Path:
    """Generate into ``out/NAME`` unless it is there for the same stamp; return that folder."""
    target = out / NAME
    stamp_file = target / ".export-stamp"
    if stamp_file.is_file() and stamp_file.read_text() == stamp():
        return target
    if target.exists():
        shutil.rmtree(target)
    (target / "1").mkdir(parents=True)
    for name in ("digits.py", "requirements.txt"):
        shutil.copy(SOURCE / name, target / "1" / name)
    evaluation = train(target)
    (target / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    header = "# Written by scripts/export_digits_example.py.\n"
    text = yaml.safe_dump(manifest(target), sort_keys=False)
    (target / "model.yaml").write_text(header + text)
    stamp_file.write_text(stamp())
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build/examples")
    args = parser.parse_args()
    target = write_repository(args.out)
    evaluation = json.loads((target / "evaluation.json").read_text())
    print(
        f"wrote {target}: held-out accuracy {evaluation['test_accuracy']:.4f} on "
        f"{evaluation['test_rows']} images (raw pixels: "
        f"{evaluation['raw_pixels_test_accuracy']:.4f})"
    )


if __name__ == "__main__":
    main()
