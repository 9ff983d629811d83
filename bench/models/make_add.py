"""Write bench/models/add/: a trivial ONNX model (y = x + 1 on FP32 [n, 16]) and its model.yaml.

Used by the suite to measure per-request overhead, where the server rather than the model shows.
The files are committed; rerun this (needs the ``onnx`` package) only to change them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent / "add"
WIDTH = 16


def build() -> onnx.ModelProto:
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "add_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", WIDTH])],
        initializer=[one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    (HERE / "1").mkdir(parents=True, exist_ok=True)
    artifact = HERE / "1" / "model.onnx"
    artifact.write_bytes(build().SerializeToString())
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    (HERE / "model.yaml").write_text(
        "# Written by bench/models/make_add.py: y = x + 1, the per-request overhead probe.\n"
        "runtime: onnx\n"
        f"inputs:\n  - {{name: x, datatype: FP32, shape: [-1, {WIDTH}]}}\n"
        f"outputs:\n  - {{name: y, datatype: FP32, shape: [-1, {WIDTH}]}}\n"
        "batching:\n  max_batch_size: 8\n  max_queue_delay_ms: 0\n  max_queue_size: 256\n"
        "onnx:\n  intra_op_threads: 1\n  inter_op_threads: 1\n  spin_wait: false\n"
        f"sha256:\n  1/model.onnx: {digest}\n"
    )
    print(f"wrote {artifact} ({artifact.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
