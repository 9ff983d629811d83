"""The numpy model of bench/python_models.py as a LitServe ``LitAPI``, with LitServe's batching.

y = tanh(x @ W), x FP32 [rows, 64], W the 64×64 float32 matrix in ``$WEIGHTS`` (a ``.npy``
file the benchmark writes, the same one its infership models load). The request is the same
Open Inference Protocol JSON body infership is sent (``{"inputs": [{"name": "x", "shape":
[1, 64], "data": [...]}]}``), so both servers parse the same bytes; the answer is the same
OIP JSON shape. Settings from the environment: ``PORT``, ``MAX_BATCH`` (LitAPI's
``max_batch_size``), ``BATCH_TIMEOUT_MS`` (``batch_timeout``; 0 makes LitServe's batching loop
poll its queue without sleeping, so the benchmark keeps it above 0) and ``WORKERS``
(``workers_per_device`` on the CPU; LitServe starts as many API server processes).

Run with bench/peers/.venvs/litserve/bin/python (``bench/peers/setup.sh litserve``).
"""

from __future__ import annotations

import os

import litserve as ls
import numpy as np


class NumpyApi(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.weights = np.load(os.environ["WEIGHTS"])

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        (x,) = (t for t in request["inputs"] if t["name"] == "x")
        return np.asarray(x["data"], dtype=np.float32).reshape(x["shape"])

    def batch(self, inputs):  # type: ignore[no-untyped-def]
        return np.concatenate(inputs), [len(i) for i in inputs]

    def predict(self, batch):  # type: ignore[no-untyped-def]
        x, rows = batch
        return np.tanh(x @ self.weights), rows

    def unbatch(self, output):  # type: ignore[no-untyped-def]
        y, rows = output
        return np.split(y, np.cumsum(rows)[:-1])

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return {
            "model_name": "mm",
            "outputs": [{"name": "y", "datatype": "FP32", "shape": list(output.shape),
                         "data": output.ravel().tolist()}],
        }  # fmt: skip


if __name__ == "__main__":
    api = NumpyApi(
        max_batch_size=int(os.environ.get("MAX_BATCH", "8")),
        batch_timeout=float(os.environ.get("BATCH_TIMEOUT_MS", "10")) / 1000,
    )
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=int(os.environ.get("WORKERS", "1")),
        healthcheck_path="/health",
    )
    server.run(port=int(os.environ["PORT"]), host="127.0.0.1", generate_client_file=False,
               log_level="warning")  # fmt: skip
