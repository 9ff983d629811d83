"""Tensors between the server and a worker process: shared memory that grows with the tensors
(its descriptor riding on the message), BYTES in the message, and results that are copies."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import numpy as np
import pytest

from infership.repository.manifest import PythonCode
from infership.usercode import CodeHost, load_code

ECHO = """
import numpy as np

class Model:
    def __init__(self, folder, options):
        pass

    def predict(self, batch):
        out = {name: value * 2 for name, value in batch.items() if value.dtype != object}
        for name, value in batch.items():
            if value.dtype == object:
                out[name] = np.array([b[::-1] for b in value.reshape(-1)], dtype=object)
        return out
"""


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CodeHost]:
    folder = tmp_path_factory.mktemp("echo") / "1"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(ECHO))
    code = PythonCode.model_validate({"execution": "process", "workers": 1})
    host = load_code("echo", folder, code, None)
    yield host
    host.close()


@pytest.mark.parametrize("rows", [1, 300, 5000, 2, 20_000], ids=lambda r: f"{r}-rows")
def test_tensors_of_growing_and_shrinking_size_cross_intact(worker: CodeHost, rows: int) -> None:
    # 20,000 × 512 FP32 is 40 MB: both arenas are replaced several times along the way.
    x = np.random.default_rng(rows).standard_normal((rows, 512)).astype(np.float32)
    i = np.arange(rows * 3, dtype=np.int64).reshape(rows, 3)
    out = worker.call("predict", {"x": x, "i": i})
    np.testing.assert_array_equal(out["x"], x * 2)
    np.testing.assert_array_equal(out["i"], i * 2)
    assert out["x"].flags.owndata or out["x"].base is not None  # a copy, not the arena


def test_bytes_tensors_travel_in_the_message(worker: CodeHost) -> None:
    items = np.array([b"abc", b"", "ü".encode(), bytes(range(256))], dtype=object)
    out = worker.call("predict", {"s": items})
    assert out["s"].tolist() == [b"cba", b"", "ü".encode()[::-1], bytes(range(256))[::-1]]


def test_results_stay_valid_after_the_next_call(worker: CodeHost) -> None:
    first = worker.call("predict", {"x": np.ones((4, 4), np.float32)})["x"]
    worker.call("predict", {"x": np.full((4000, 512), 7, np.float32)})
    np.testing.assert_array_equal(first, np.full((4, 4), 2, np.float32))
