"""The ONNX Runtime runtime on the real example model: signature, providers, batching, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from infership.app import EXAMPLE_REPOSITORY
from infership.errors import InferenceFailed, ModelLoadError
from infership.repository.manifest import OnnxOptions
from infership.runtimes import load_runtime
from infership.types import TensorSpec

MODEL = EXAMPLE_REPOSITORY / "efficientnet-lite0" / "1" / "model.onnx"
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_signature_is_read_from_the_model() -> None:
    runtime = load_runtime("onnx", MODEL, OnnxOptions(intra_op_threads=1))
    assert runtime.platform == "onnxruntime_onnx"
    assert runtime.inputs == (TensorSpec("input", "FP32", (-1, 3, 224, 224)),)
    assert runtime.outputs == (TensorSpec("logits", "FP32", (-1, 1000)),)


def test_batched_rows_equal_single_rows() -> None:
    runtime = load_runtime("onnx", MODEL, OnnxOptions(intra_op_threads=1))
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32)
    batched = runtime.infer({"input": x})["logits"]
    singles = np.concatenate([runtime.infer({"input": x[i : i + 1]})["logits"] for i in range(3)])
    np.testing.assert_allclose(batched, singles, atol=1e-4)


@pytest.mark.skipif(HAS_CUDA, reason="checks the fallback on machines without CUDA")
def test_unavailable_gpu_provider_falls_back_to_cpu_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        runtime = load_runtime("onnx", MODEL, OnnxOptions(execution_providers=("cuda", "cpu")))
    assert runtime.providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
    assert "['cuda'] are not available" in caplog.text


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and an NVIDIA GPU")
def test_cuda_provider_is_used_when_present_and_asked_for() -> None:
    runtime = load_runtime("onnx", MODEL, OnnxOptions(execution_providers=("cuda",)))
    assert runtime.providers[0] == "CUDAExecutionProvider"  # type: ignore[attr-defined]
    x = np.zeros((2, 3, 224, 224), dtype=np.float32)
    assert runtime.infer({"input": x})["logits"].shape == (2, 1000)


def test_a_file_that_is_not_onnx_is_a_load_error(tmp_path: Path) -> None:
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"definitely not a protobuf")
    with pytest.raises(ModelLoadError, match=str(bogus)):
        load_runtime("onnx", bogus, OnnxOptions())


def test_unknown_runtime_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="unknown runtime 'tensorflow'"):
        load_runtime("tensorflow", MODEL, OnnxOptions())


def test_compute_errors_become_inference_failed() -> None:
    runtime = load_runtime("onnx", MODEL, OnnxOptions(intra_op_threads=1))
    with pytest.raises(InferenceFailed, match="onnxruntime failed"):
        runtime.infer({"input": np.zeros((1, 3, 32, 32), dtype=np.float32)})


def string_model(tmp_path: Path) -> Path:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Identity", ["words"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("words", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["n"])],
    )
    path = tmp_path / "strings.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_bytes_inputs_reach_a_string_model_as_text(tmp_path: Path) -> None:
    runtime = load_runtime("onnx", string_model(tmp_path), OnnxOptions())
    words = np.array([b"caf\xc3\xa9", "tea"], dtype=object)
    assert runtime.infer({"words": words})["same"].tolist() == ["café", "tea"]


def test_bytes_that_are_not_utf8_are_the_clients_error(tmp_path: Path) -> None:
    from infership.errors import InvalidRequest

    runtime = load_runtime("onnx", string_model(tmp_path), OnnxOptions())
    with pytest.raises(InvalidRequest, match=r"input 'words' holds bytes that are not UTF-8"):
        runtime.infer({"words": np.array([b"\xff"], dtype=object)})
