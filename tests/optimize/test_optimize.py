"""``infership optimize``: rewrites, the accuracy gate, the new version and its digests."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, load, numpy_helper, save

from conftest import TESTDATA, reference_preprocess
from infership.app import EXAMPLE_REPOSITORY
from infership.cli import main
from infership.errors import AccuracyCheckFailed, ConfigError, ModelLoadError
from infership.optimize import Gates, optimize
from infership.optimize.transform import transform
from infership.repository import FilesystemRepository
from infership.repository.manifest import OnnxOptions, load_manifest
from infership.runtimes import load_runtime

IMAGES = TESTDATA / "images"


def tiny_model(
    folder: Path, manifest: str = "runtime: onnx\n", weights: np.ndarray | None = None
) -> Path:
    """A one-MatMul model; by default its weights span a wide range, so int8 visibly moves it."""
    if weights is None:
        weights = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
        weights[0, 0] = 50.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="dense/MatMul")],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", weights.shape[1]])],
        [numpy_helper.from_array(weights, "w")],
    )
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    (folder / "1").mkdir(parents=True)
    save(model, str(folder / "1" / "model.onnx"))
    (folder / "model.yaml").write_text(manifest)
    return folder


@pytest.fixture
def example(tmp_path: Path) -> Path:
    target = tmp_path / "efficientnet-lite0"
    shutil.copytree(EXAMPLE_REPOSITORY / "efficientnet-lite0", target)
    return target


def test_static_int8_example_keeps_top1_and_serves_as_a_new_version(example: Path) -> None:
    report = optimize(example, "static", samples=IMAGES, seconds=0.5)
    assert (report.source_version, report.new_version) == (1, 2)
    assert report.accuracy.samples == 2
    assert report.accuracy.top1_agreement == 1.0
    assert report.optimized_bytes < 0.35 * report.original_bytes
    assert report.speed.original_per_s > 0
    assert report.speed.candidate_per_s > 0
    # The new version verifies against model.yaml and classifies the test images as before.
    source = FilesystemRepository(example.parent).find("efficientnet-lite0")
    source.verify()
    assert "2/model.onnx" in source.manifest.sha256
    runtime = load_runtime("onnx", example / "2" / "model.onnx", OnnxOptions(intra_op_threads=1))
    x = np.concatenate([reference_preprocess((IMAGES / n).read_bytes()) for n in IMAGES_BY_CLASS])
    top1 = runtime.infer({"input": x})["logits"].argmax(axis=1)
    assert list(top1) == list(IMAGES_BY_CLASS.values())


IMAGES_BY_CLASS = {"chelsea.jpg": 285, "coffee.jpg": 967}  # Egyptian cat, espresso


def test_graph_optimisation_keeps_outputs_and_comments(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "tiny", "# keep me\nruntime: onnx\nsha256: {}\n")
    report = optimize(folder, "graph", seconds=0.2)
    assert report.accuracy.min_cosine > 0.99999
    assert report.accuracy.top1_agreement is None
    text = (folder / "model.yaml").read_text()
    assert text.startswith("# keep me\n")
    assert set(load_manifest(folder / "model.yaml").sha256) == {"2/model.onnx"}


def test_a_rewrite_beyond_the_gate_writes_nothing(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "tiny")
    before = (folder / "model.yaml").read_text()
    with pytest.raises(AccuracyCheckFailed, match=r"lowest cosine similarity .* nothing written"):
        optimize(folder, "dynamic", gates=Gates(min_cosine=0.9999999), seconds=0.2)
    assert sorted(p.name for p in folder.iterdir()) == ["1", "model.yaml"]
    assert (folder / "model.yaml").read_text() == before


def test_a_shortfall_is_stated_with_the_digits_that_show_it(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "tiny")
    measured = optimize(folder, "dynamic", gates=Gates(min_cosine=0.0), seconds=0.2)
    lowest = measured.accuracy.min_cosine
    gate = lowest + 2e-6  # the same rewrite, now missing the gate by 0.000002
    with pytest.raises(AccuracyCheckFailed) as failed:
        optimize(folder, "dynamic", version=1, gates=Gates(min_cosine=gate), seconds=0.2)
    found = re.fullmatch(
        r"lowest cosine similarity to the original is (0\.\d+), (0\.\d+) below the gate of "
        r"([0-9.]+); nothing written",
        str(failed.value),
    )
    assert found is not None, failed.value
    assert float(found[1]) == pytest.approx(lowest, abs=1e-7)
    assert found[2] == "0.0000020"
    assert float(found[3]) == gate
    assert not (folder / "3").exists()


def test_outputs_that_are_not_numbers_never_pass_the_gate(tmp_path: Path) -> None:
    # y = sqrt(x @ w): NaN wherever x @ w < 0, before and after the rewrite. NaN compares false
    # with any gate, so a careless "cosine < gate" check would let this through.
    folder = tiny_model(tmp_path / "tiny")
    model = load(str(folder / "1" / "model.onnx"))
    model.graph.node[0].output[0] = "z"
    model.graph.node.append(helper.make_node("Sqrt", ["z"], ["y"]))
    save(model, str(folder / "1" / "model.onnx"))
    with pytest.raises(AccuracyCheckFailed, match=r"not a number .* nothing written"):
        optimize(folder, "graph", gates=Gates(min_cosine=0.0), seconds=0.2)
    assert sorted(p.name for p in folder.iterdir()) == ["1", "model.yaml"]


def test_nodes_kept_in_fp32_are_not_quantised(tmp_path: Path) -> None:
    # The same rewrite that misses a strict gate (above) meets it with its MatMul left in FP32.
    folder = tiny_model(tmp_path / "tiny")
    strict = ["--min-cosine", "0.9999999", "--seconds", "0.2"]
    args = ["optimize", str(folder), "--mode", "dynamic", "--keep-fp32", "dense/Mat", *strict]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    ops = {node.op_type for node in load(str(folder / "2" / "model.onnx")).graph.node}
    assert "MatMul" in ops
    assert "MatMulInteger" not in ops


def test_a_keep_fp32_pattern_must_match_a_node_of_a_quantising_mode(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "tiny")
    with pytest.raises(ConfigError, match=r"'attention' matches no node name; .*'dense/MatMul'"):
        optimize(folder, "dynamic", keep_fp32=("dense", "attention"))
    with pytest.raises(ConfigError, match="not a regular expression"):
        optimize(folder, "dynamic", keep_fp32=("dense(",))
    with pytest.raises(ConfigError, match="quantising modes only"):
        optimize(folder, "graph", keep_fp32=("dense",))
    assert sorted(p.name for p in folder.iterdir()) == ["1", "model.yaml"]


def test_a_changed_top1_fails_the_classifier_gate(tmp_path: Path) -> None:
    # Two classes that differ only by small weights beside a huge shared one: int8 rounds the
    # small ones to zero, the scores tie, and the arg-max moves for about half of the samples.
    weights = np.zeros((16, 2), dtype=np.float32)
    weights[0] = 1e4
    weights[1:, 0] = np.random.default_rng(1).standard_normal(15)
    classifier = "runtime: onnx\npostprocess:\n  classification: {output: y, top_k: 1}\n"
    folder = tiny_model(tmp_path / "tiny", classifier, weights)
    with pytest.raises(AccuracyCheckFailed, match=r"top-1 class changed on .* of 8 samples"):
        optimize(folder, "dynamic", seconds=0.2)
    assert not (folder / "2").exists()


def test_an_existing_target_version_is_refused(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "tiny")
    (folder / "5").mkdir()
    with pytest.raises(ConfigError, match="version 5 exists already"):
        optimize(folder, "graph", new_version=5)


def test_an_unknown_source_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no version 3; versions are \[1\]"):
        optimize(tiny_model(tmp_path / "tiny"), "graph", version=3)


def test_only_onnx_models_are_rewritten(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "tiny", "runtime: torch\nartifact: model.pt2\n")
    with pytest.raises(ConfigError, match="optimize rewrites ONNX models only"):
        optimize(folder, "graph")


def test_samples_need_a_pre_processing_step_to_read_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no image or text pre-processing"):
        optimize(tiny_model(tmp_path / "tiny"), "graph", samples=IMAGES)


def test_a_samples_folder_without_images_is_refused(example: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no images"):
        optimize(example, "static", samples=tmp_path)


def test_static_quantisation_without_calibration_is_refused(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "tiny")
    with pytest.raises(ConfigError, match="needs calibration samples"):
        transform(folder / "1" / "model.onnx", tmp_path / "out.onnx", "static", [])


def test_cli_prints_the_report_and_writes_json(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "tiny")
    report_path = tmp_path / "report.json"
    args = ["optimize", str(folder), "--mode", "graph", "--seconds", "0.2"]
    result = CliRunner().invoke(main, [*args, "--json", str(report_path)])
    assert result.exit_code == 0, result.output
    assert "tiny: version 1 -> 2 (graph)" in result.output
    assert "throughput  batch 8:" in result.output
    report = json.loads(report_path.read_text())
    assert report["new_version"] == 2
    assert report["speed"]["speedup"] > 0


def test_cli_exit_codes_name_the_problem(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "tiny")
    bad = CliRunner().invoke(main, ["optimize", str(folder), "--version", "9"])
    assert bad.exit_code == 2
    assert "no version 9" in bad.output
    strict = ["optimize", str(folder), "--min-cosine", "0.9999999", "--seconds", "0.2"]
    failed = CliRunner().invoke(main, strict)
    assert failed.exit_code == 1
    assert "nothing written" in failed.output


def test_a_model_onnxruntime_cannot_load_is_a_load_error(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "tiny")
    (folder / "1" / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError, match="could not load the model"):
        optimize(folder, "graph")
