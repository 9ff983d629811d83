"""What every peer app shares: the same model files, preprocessing and answer as infership.

Each peer app (``NAME_app.py``) runs in its own virtualenv (``setup.sh``) and serves, on
``$PORT``, one model chosen by ``$MODE``: ``image`` (the example EfficientNet-Lite0; a multipart
upload with the file in field ``img``; top-5 labels back) or ``add`` (the trivial model; JSON
``{"x": [16 floats]}``; ``{"y": [...]}`` back), each in the shape its own docs show.

``python common.py request NAME MODE`` prints, as JSON, how the suite starts that peer (``argv``,
extra ``env``), where it waits for readiness (``ready``), the request it sends (``path``, and a
``body`` with ``$X`` for the 16 floats or ``$IMAGE`` for the base64 JPEG; no body: the upload)
and the peer's ``version``.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "src" / "infership" / "examples" / "models" / "efficientnet-lite0"
ADD = ROOT / "bench" / "models" / "add"
MODE = os.environ.get("MODE", "image")
PORT = int(os.environ.get("PORT", "8000"))
MAX_BATCH = 8


def session() -> ort.InferenceSession:
    """The model for $MODE, with idle threads not spinning, as infership configures it."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    folder = EXAMPLE if MODE == "image" else ADD
    return ort.InferenceSession(str(folder / "1" / "model.onnx"), options,
                                providers=["CPUExecutionProvider"])  # fmt: skip


LABELS = (EXAMPLE / "labels.txt").read_text(encoding="utf-8").splitlines()


def preprocess(data: bytes) -> np.ndarray:
    """[3, 224, 224] float32: RGB, bilinear 224×224, (x/255 − 0.5) / 0.5 (the example's)."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (224, 224))
        rgb = image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    return ((np.asarray(rgb, dtype=np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)


def top5(logits: np.ndarray) -> list[dict[str, object]]:
    exp = np.exp(logits - logits.max())
    probabilities = exp / exp.sum()
    best = np.argsort(probabilities)[::-1][:5]
    return [{"label": LABELS[i], "probability": float(probabilities[i]), "class_index": int(i)}
            for i in best]  # fmt: skip


def classify(sess: ort.InferenceSession, images: list[bytes]) -> list[list[dict[str, object]]]:
    (logits,) = sess.run(["logits"], {"input": np.stack([preprocess(i) for i in images])})
    return [top5(row) for row in logits]


def add(sess: ort.InferenceSession, rows: list[list[float]]) -> list[list[float]]:
    (y,) = sess.run(["y"], {"x": np.asarray(rows, dtype=np.float32)})
    return y.tolist()  # type: ignore[no-any-return]


# The path each peer's docs show for its own API.
REQUESTS = {
    "fastapi": {"image": "/predict", "add": "/add"},
    "litserve": {"image": "/predict", "add": "/predict"},
    "bentoml": {"image": "/predict", "add": "/add"},
    "rayserve": {"image": "/", "add": "/"},
}
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the peer's virtualenv (the suite runs this file with it)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


PACKAGES = {"fastapi": "fastapi", "litserve": "litserve", "bentoml": "bentoml",
            "mlserver": "mlserver", "rayserve": "ray"}  # fmt: skip


def request(name: str, mode: str) -> dict[str, object]:
    from importlib.metadata import version

    spec: dict[str, object] = {"argv": [str(BIN / "python"), str(HERE / f"{name}_app.py")],
                               "env": {}, "ready": "/health",
                               "version": version(PACKAGES[name])}  # fmt: skip
    if name == "mlserver":
        # MLServer's CLI on a model repository (model-settings.json files), its ports from env.
        model = "effnet" if mode == "image" else "add"
        spec["argv"] = [str(BIN / "mlserver"), "start", str(HERE / "mlserver" / mode)]
        spec["env"] = {"MLSERVER_HOST": "127.0.0.1", "MLSERVER_HTTP_PORT": str(PORT),
                       "MLSERVER_GRPC_PORT": str(_free_port()),
                       "MLSERVER_METRICS_PORT": str(_free_port())}  # fmt: skip
        spec["ready"] = f"/v2/models/{model}/ready"
        spec["path"] = f"/v2/models/{model}/infer"
        if mode == "image":  # JSON carries no raw bytes: MLServer's base64 codec
            spec["body"] = (
                '{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],'
                '"parameters":{"content_type":"base64"},"data":["$IMAGE"]}]}'
            )
        else:
            spec["body"] = '{"inputs":[{"name":"x","datatype":"FP32","shape":[1,16],"data":$X}]}'
        return spec
    if name == "bentoml":
        # `bentoml serve module:Service`, as its docs start a service.
        service = "Classifier" if mode == "image" else "Adder"
        spec["argv"] = [str(BIN / "bentoml"), "serve", f"bentoml_app:{service}", "--working-dir",
                        str(HERE), "--host", "127.0.0.1", "--port", str(PORT)]  # fmt: skip
        spec["ready"] = "/readyz"
    spec["path"] = REQUESTS[name][mode]
    if mode == "add":
        # A batchable BentoML ndarray is batched along its first axis: one row per request.
        spec["body"] = '{"x": [$X]}' if name == "bentoml" else '{"x": $X}'
    return spec


if __name__ == "__main__" and sys.argv[1:2] == ["request"]:
    print(json.dumps(request(sys.argv[2], sys.argv[3])))
