"""The PyTorch runtime: torch.export and TorchScript loading, safety checks, devices, batching."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import reference_preprocess
from infership.app import EXAMPLE_REPOSITORY
from infership.errors import ConfigError, InferenceFailed, ModelLoadError
from infership.repository.manifest import ModelManifest, TensorConfig, TorchOptions
from infership.runtimes import load_runtime
from infership.types import TensorSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
HAS_CUDA = torch.cuda.is_available()
NO_CUDA = "needs a CUDA build of torch and an NVIDIA GPU (none here)"


def export_torch_example() -> Path:
    """The bundled example's weights as a .pt2 repository entry (cached in build/examples)."""
    script = REPO_ROOT / "scripts" / "export_torch_example.py"
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    return REPO_ROOT / "build" / "examples" / "efficientnet-lite0-torch"


@pytest.fixture(scope="module")
def image_pt2() -> Path:
    return export_torch_example() / "1" / "model.pt2"


class Affine(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(3, 2))

    def forward(self, x: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = x @ self.weight + shift
        return y, y.argmax(dim=1)


def manifest(**fields: object) -> ModelManifest:
    return ModelManifest.model_validate({"runtime": "torch", **fields})


def save_export(path: Path) -> Path:
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(
        Affine(),
        (torch.zeros(2, 3), torch.zeros(2, 2)),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    torch.export.save(program, path)
    return path


def save_torchscript(path: Path) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(Affine(), (torch.zeros(2, 3), torch.zeros(2, 2))).save(str(path))  # type: ignore[no-untyped-call]
    return path


AFFINE_IO = {
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "shift", "datatype": "FP32", "shape": [-1, 2]},
    ],
    "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "best", "datatype": "INT64", "shape": [-1]},
    ],
}


def test_export_signature_is_read_from_the_program(tmp_path: Path) -> None:
    runtime = load_runtime("torch", save_export(tmp_path / "m.pt2"), manifest())
    assert runtime.platform == "pytorch_export"
    assert runtime.inputs == (
        TensorSpec("x", "FP32", (-1, 3)),
        TensorSpec("shift", "FP32", (-1, 2)),
    )
    # Undeclared outputs are named as Triton's PyTorch backend names them.
    assert runtime.outputs == (
        TensorSpec("output__0", "FP32", (-1, 2)),
        TensorSpec("output__1", "INT64", (-1,)),
    )


def test_export_outputs_take_the_declared_names_and_compute(tmp_path: Path) -> None:
    runtime = load_runtime("torch", save_export(tmp_path / "m.pt2"), manifest(**AFFINE_IO))
    x = np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32)
    result = runtime.infer({"x": x, "shift": np.zeros((2, 2), dtype=np.float32)})
    np.testing.assert_array_equal(result["y"], [[0, 1], [4, 5]])
    np.testing.assert_array_equal(result["best"], [1, 1])
    assert result["best"].dtype == np.int64


def test_declaring_the_wrong_number_of_outputs_is_a_config_error(tmp_path: Path) -> None:
    declared = manifest(outputs=[{"name": "y", "datatype": "FP32", "shape": [-1, 2]}])
    with pytest.raises(ConfigError, match="declares 1 outputs but the program returns 2"):
        load_runtime("torch", save_export(tmp_path / "m.pt2"), declared)


def test_torchscript_loads_with_the_declared_signature(tmp_path: Path) -> None:
    path = save_torchscript(tmp_path / "m.ts")
    runtime = load_runtime("torch", path, manifest(**AFFINE_IO))
    assert runtime.platform == "pytorch_libtorch"
    result = runtime.infer(
        {"x": np.eye(3, dtype=np.float32)[:2], "shift": np.ones((2, 2), dtype=np.float32)}
    )
    np.testing.assert_array_equal(result["y"], [[1, 2], [3, 4]])


def test_torchscript_without_declared_tensors_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="declare 'inputs' and 'outputs'"):
        load_runtime("torch", save_torchscript(tmp_path / "m.ts"), manifest())


def test_torchscript_input_names_must_match_the_declaration(tmp_path: Path) -> None:
    wrong = {**AFFINE_IO, "inputs": [AFFINE_IO["inputs"][1], AFFINE_IO["inputs"][0]]}
    with pytest.raises(ConfigError, match=r"forward\(\) takes \['x', 'shift'\]"):
        load_runtime("torch", save_torchscript(tmp_path / "m.ts"), manifest(**wrong))


def test_a_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(Affine(), path)
    with pytest.raises(ConfigError, match=r"Pickled checkpoints .* are refused"):
        load_runtime("torch", path, manifest())


@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_a_pickle_named_as_a_safe_format_is_refused_before_unpickling(
    tmp_path: Path, fmt: str
) -> None:
    path = tmp_path / ("model.pt2" if fmt == "export" else "model.ts")
    torch.save({"weight": torch.zeros(2)}, path)  # a zip too, but a pickle inside
    with pytest.raises(ConfigError, match=r"a torch\.save checkpoint\?"):
        load_runtime("torch", path, manifest(**AFFINE_IO))


def test_a_file_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(b"\x80\x04not a zip at all")
    with pytest.raises(ConfigError, match=r"not a torch\.export"):
        load_runtime("torch", path, manifest())


def rewrite_entry(path: Path, suffix: str, change: object) -> None:
    """Replace the archive entry ending in ``suffix`` with ``change(old_bytes)``."""
    with zipfile.ZipFile(path) as old:
        entries = {i.filename: old.read(i.filename) for i in old.infolist()}
    (name,) = (n for n in entries if n.endswith(suffix))
    entries[name] = change(entries[name])  # type: ignore[operator]
    with zipfile.ZipFile(path, "w") as new:
        for entry, data in entries.items():
            new.writestr(entry, data)


def test_a_program_with_pickled_weights_is_refused(tmp_path: Path) -> None:
    path = save_export(tmp_path / "m.pt2")

    def pickled(raw: bytes) -> bytes:
        config = json.loads(raw)
        for meta in config["config"].values():
            meta["use_pickle"] = True
        return json.dumps(config).encode()

    rewrite_entry(path, "_weights_config.json", pickled)
    with pytest.raises(ConfigError, match="stored as a pickled object"):
        load_runtime("torch", path, manifest())


def test_sample_inputs_that_need_full_unpickling_are_refused(tmp_path: Path) -> None:
    path = save_export(tmp_path / "m.pt2")

    def arbitrary_object(_: bytes) -> bytes:
        buffer = io.BytesIO()
        torch.save({"cls": Affine}, buffer)  # a class reference: not loadable weights-only
        return buffer.getvalue()

    rewrite_entry(path, "sample_inputs/model.pt", arbitrary_object)
    with pytest.raises(ConfigError, match="needs full unpickling"):
        load_runtime("torch", path, manifest())


def test_an_unknown_extension_needs_an_explicit_format(tmp_path: Path) -> None:
    path = save_export(tmp_path / "m.pt2").rename(tmp_path / "model.bin")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        load_runtime("torch", path, manifest())
    runtime = load_runtime("torch", path, manifest(torch={"format": "export"}))
    assert runtime.inputs[0].name == "x"


def test_a_program_loads_from_bytes_in_memory(tmp_path: Path) -> None:
    path = save_export(tmp_path / "m.pt2")
    data = path.read_bytes()
    path.unlink()  # decrypted models are never on disk
    runtime = load_runtime("torch", path, manifest(), data)
    assert runtime.inputs[0].name == "x"


def test_compute_errors_become_inference_failed(tmp_path: Path) -> None:
    runtime = load_runtime("torch", save_export(tmp_path / "m.pt2"), manifest(**AFFINE_IO))
    with pytest.raises(InferenceFailed, match="torch failed"):
        runtime.infer({"x": np.zeros((2, 5), np.float32), "shift": np.zeros((2, 2), np.float32)})


def test_threads_are_configurable() -> None:
    before = torch.get_num_threads()
    try:
        TorchOptions(intra_op_threads=1)
        from infership.runtimes.torch import _set_threads

        _set_threads(
            TorchOptions(intra_op_threads=1, inter_op_threads=torch.get_num_interop_threads())
        )
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_bad_device_string_is_refused_by_the_manifest() -> None:
    with pytest.raises(ValueError, match="cpu, cuda or cuda:N"):
        TorchOptions(device="tpu")


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on machines without CUDA")
def test_asking_for_cuda_without_it_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        load_runtime("torch", save_export(tmp_path / "m.pt2"), manifest(torch={"device": "cuda"}))


@pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
def test_cuda_device_computes_the_same_as_cpu(image_pt2: Path) -> None:
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224), dtype=np.float32)
    cpu = load_runtime("torch", image_pt2, manifest(**IMAGE_IO))
    gpu = load_runtime("torch", image_pt2, manifest(**IMAGE_IO, torch={"device": "cuda:0"}))
    assert gpu.device.type == "cuda"  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        gpu.infer({"input": x})["logits"], cpu.infer({"input": x})["logits"], atol=1e-2
    )


@pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
def test_a_device_index_beyond_the_visible_gpus_is_a_config_error(image_pt2: Path) -> None:
    with pytest.raises(ConfigError, match="CUDA devices are visible"):
        load_runtime("torch", image_pt2, manifest(**IMAGE_IO, torch={"device": "cuda:99"}))


IMAGE_IO = {"outputs": [TensorConfig(name="logits", datatype="FP32", shape=(-1, 1000))]}


def test_example_top5_matches_the_onnx_example(
    image_pt2: Path, chelsea: bytes, coffee: bytes
) -> None:
    torch_runtime = load_runtime("torch", image_pt2, manifest(**IMAGE_IO))
    session = ort.InferenceSession(
        str(EXAMPLE_REPOSITORY / "efficientnet-lite0" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    x = np.concatenate([reference_preprocess(chelsea), reference_preprocess(coffee)])
    from_torch = torch_runtime.infer({"input": x})["logits"]
    (from_onnx,) = session.run(["logits"], {"input": x})
    top5 = np.argsort(-from_torch, axis=1)[:, :5]
    np.testing.assert_array_equal(top5, np.argsort(-from_onnx, axis=1)[:, :5])
    assert list(top5[:, 0]) == [285, 967]  # Egyptian cat, espresso
    np.testing.assert_allclose(from_torch, from_onnx, atol=1e-3)


def test_batched_rows_equal_single_rows(image_pt2: Path) -> None:
    runtime = load_runtime("torch", image_pt2, manifest(**IMAGE_IO))
    x = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32)
    batched = runtime.infer({"input": x})["logits"]
    singles = np.concatenate([runtime.infer({"input": x[i : i + 1]})["logits"] for i in range(3)])
    np.testing.assert_allclose(batched, singles, atol=1e-4)


def test_a_missing_torch_install_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "infership.runtimes.torch", None)
    with pytest.raises(ModelLoadError, match="needs a package that is not installed"):
        load_runtime("torch", Path("m.pt2"), manifest())


class Pairs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2}


def test_a_program_returning_a_dict_fails_each_batch_clearly(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(Pairs(), (torch.zeros(2, 2),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "m.pt2")
    runtime = load_runtime("torch", tmp_path / "m.pt2", manifest())
    with pytest.raises(InferenceFailed, match="returned dict; expected tensors"):
        runtime.infer({"x": np.zeros((2, 2), np.float32)})


def test_returning_fewer_tensors_than_declared_fails_the_batch(tmp_path: Path) -> None:
    extra = {"name": "extra", "datatype": "FP32", "shape": [-1]}
    declared = {**AFFINE_IO, "outputs": [*AFFINE_IO["outputs"], extra]}
    runtime = load_runtime("torch", save_torchscript(tmp_path / "m.ts"), manifest(**declared))
    with pytest.raises(InferenceFailed, match="returned 2 tensors, expected 3"):
        runtime.infer({"x": np.zeros((1, 3), np.float32), "shift": np.zeros((1, 2), np.float32)})


def test_close_releases_the_module(tmp_path: Path) -> None:
    runtime = load_runtime("torch", save_export(tmp_path / "m.pt2"), manifest())
    runtime.close()
    with pytest.raises(InferenceFailed):
        runtime.infer({"x": np.zeros((2, 3), np.float32), "shift": np.zeros((2, 2), np.float32)})


def test_a_legacy_pickled_weights_file_in_the_archive_is_refused(tmp_path: Path) -> None:
    path = save_export(tmp_path / "m.pt2")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("m/data/weights/model.pt", b"\x80\x04pickle")
    with pytest.raises(ConfigError, match=r"'m/data/weights/model\.pt' is a pickle"):
        load_runtime("torch", path, manifest())


def test_an_unreadable_payload_index_is_refused(tmp_path: Path) -> None:
    path = save_export(tmp_path / "m.pt2")
    rewrite_entry(path, "_constants_config.json", lambda _: b"not json")
    with pytest.raises(ConfigError, match="not a valid payload index"):
        load_runtime("torch", path, manifest())


def test_a_corrupt_program_is_a_load_error(tmp_path: Path) -> None:
    path = save_export(tmp_path / "m.pt2")
    rewrite_entry(path, "models/model.json", lambda _: b"{}")
    with pytest.raises(ModelLoadError, match=r"torch\.export could not load the program"):
        load_runtime("torch", path, manifest())


def test_corrupt_torchscript_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "m.ts"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("m/code/__torch__.py", "garbage")
        archive.writestr("m/constants.pkl", b"garbage")
    with pytest.raises(ModelLoadError, match=r"torch\.jit could not load the model"):
        load_runtime("torch", path, manifest(**AFFINE_IO))


class Brain(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.bfloat16)


def test_a_dtype_the_protocol_lacks_is_a_load_error(tmp_path: Path) -> None:
    program = torch.export.export(Brain(), (torch.zeros(2, 2),))
    torch.export.save(program, tmp_path / "m.pt2")
    with pytest.raises(ModelLoadError, match=r"unsupported dtype torch\.bfloat16"):
        load_runtime("torch", tmp_path / "m.pt2", manifest())


def test_inter_op_threads_that_can_no_longer_change_are_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from infership.runtimes.torch import _set_threads

    # torch accepts one setting per process, before the pool starts; a second one is refused.
    first = torch.get_num_interop_threads() + 1
    _set_threads(TorchOptions(inter_op_threads=first))
    with caplog.at_level(logging.WARNING):
        _set_threads(TorchOptions(inter_op_threads=first + 1))
    assert f"inter-op threads stay at {torch.get_num_interop_threads()}" in caplog.text
