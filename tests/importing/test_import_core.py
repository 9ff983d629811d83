"""What every import does, whatever the framework: staging, parity, versions, refusals, CLI.

The model here is a real ONNX graph run by onnxruntime; the sources of the frameworks have their
own test files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import infership
from infership.errors import ImportFailed, ParityFailed
from infership.importing import Tolerance, import_path, save_model, verify_parity
from infership.importing.parity import compare
from infership.importing.source import Exported, ImportOptions, Source
from infership.importing.sources.onnx import OnnxSource
from infership.repository.manifest import load_manifest

from .conftest import served_outputs

WEIGHTS = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
ROWS = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)


def linear(batch: str | int = "batch") -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        [numpy_helper.from_array(WEIGHTS, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_save_model_writes_a_version_the_server_loads_with_digests(tmp_path: Path) -> None:
    report = save_model(linear(), tmp_path, "linear", example_inputs=ROWS, labels=["a", "b", "c"])

    folder = tmp_path / "linear"
    manifest = load_manifest(folder / "model.yaml")
    assert report.version == 1
    assert report.path == folder / "1"
    assert manifest.postprocess.classification is not None
    assert manifest.postprocess.classification.labels == "labels.txt"
    assert (folder / "labels.txt").read_text() == "a\nb\nc\n"
    assert set(manifest.sha256) == {"1/model.onnx", "1/import-report.json", "labels.txt"}
    assert manifest.batching.max_batch_size == 32
    assert report.parity.passed
    assert report.parity.samples == 5
    assert [o.top1_agreement for o in report.parity.outputs] == [1.0]
    written = json.loads((folder / "1" / "import-report.json").read_text())
    assert written["parity"]["passed"] is True
    assert not list(tmp_path.glob(".import-*")), "the staging folder is removed"


@pytest.mark.e2e
def test_an_imported_model_answers_tritonclient_as_the_original(tmp_path: Path) -> None:
    save_model(linear(), tmp_path, "linear", labels=["a", "b", "c"])

    served = served_outputs(tmp_path, "linear", {"x": ROWS}, ["logits", "label"])

    np.testing.assert_allclose(served["logits"], ROWS @ WEIGHTS, rtol=1e-5, atol=1e-6)
    expected = np.array(["abc"[i] for i in (ROWS @ WEIGHTS).argmax(axis=1)])
    assert [row[0].decode() for row in served["label"]] == expected.tolist()


def test_each_import_is_the_next_version_and_never_overwrites(tmp_path: Path) -> None:
    first = save_model(linear(), tmp_path, "linear")
    before = (tmp_path / "linear" / "1" / "model.onnx").read_bytes()
    second = save_model(linear(), tmp_path, "linear")

    assert (first.version, second.version) == (1, 2)
    assert (tmp_path / "linear" / "1" / "model.onnx").read_bytes() == before
    digests = load_manifest(tmp_path / "linear" / "model.yaml").sha256
    assert {"1/model.onnx", "2/model.onnx"} <= set(digests)


def test_a_version_that_would_change_the_models_settings_is_refused(tmp_path: Path) -> None:
    save_model(linear(), tmp_path, "linear", labels=["a", "b", "c"])

    with pytest.raises(ImportFailed, match=r"field 'postprocess' would change"):
        save_model(linear(), tmp_path, "linear")
    assert sorted(p.name for p in (tmp_path / "linear").iterdir()) == [
        "1",
        "labels.txt",
        "model.yaml",
    ]


def test_a_model_without_a_free_batch_axis_is_written_with_batches_of_one(
    tmp_path: Path,
) -> None:
    report = save_model(linear(batch=1), tmp_path, "fixed")

    assert load_manifest(tmp_path / "fixed" / "model.yaml").batching.max_batch_size == 1
    assert any("max_batch_size 1" in note for note in report.notes)


class Drifting(Source):
    """A converter with a bug: its export adds 0.01 to every score. The parity check is what
    must stop it."""

    name = "drifting"
    extra = "optimize"

    def accepts(self, model: object) -> bool:
        return False

    def export(self, model: object, options: ImportOptions, version_dir: Path) -> Exported:
        exported = OnnxSource().export(model, options, version_dir)
        exact = exported.original
        exported.original = lambda feed: {k: v - 0.01 for k, v in exact(feed).items()}
        return exported


def test_an_export_that_differs_writes_nothing_and_names_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infership.importing import registry

    monkeypatch.setattr(registry, "source", lambda name: Drifting())
    with pytest.raises(ParityFailed, match=r"output 'logits': differs by 0.01 at row \d"):
        save_model(linear(), tmp_path, "drift", source="drifting")
    assert not (tmp_path / "drift").exists()
    assert not list(tmp_path.glob(".import-*"))


def test_a_looser_tolerance_is_the_callers_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infership.importing import registry

    monkeypatch.setattr(registry, "source", lambda name: Drifting())
    report = save_model(linear(), tmp_path, "drift", source="drifting", tolerance=Tolerance(0.02))
    assert report.parity.outputs[0].max_abs_diff == pytest.approx(0.01, rel=1e-3)


def test_an_object_no_importer_takes_is_refused_naming_its_type(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match=r"no importer takes a builtins.dict"):
        save_model({"weights": 1}, tmp_path, "m")


def test_an_invalid_model_name_is_refused_before_any_export(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match=r"not a valid model name"):
        save_model(linear(), tmp_path, "../escape")
    assert list(tmp_path.iterdir()) == []


def test_the_top_level_package_offers_save_model_lazily() -> None:
    code = "import sys, infership; assert 'infership.importing' not in sys.modules; "
    code += "infership.save_model; assert 'infership.importing' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("original", "served", "check", "problem"),
    [
        (np.array([[1.0, 2.0]]), np.array([[1.0, 2.0]]), "close", None),
        (np.array([[1.0, 2.0]]), np.array([[2.0, 1.0]]), "top1", "top-1 class differs"),
        (np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), "cosine", "cosine similarity"),
        (np.array([b"a", b"b"], dtype=object), np.array(["a", "c"]), "exact", "1 of 2"),
        (np.array([[np.nan]]), np.array([[np.nan]]), "close", None),
        (np.array([[np.nan]]), np.array([[1.0]]), "close", "NaN or infinite"),
        (np.zeros((2, 3)), np.zeros((3, 2)), "close", "shape"),
    ],
)
def test_outputs_compare_by_their_kind(
    original: Any, served: Any, check: Any, problem: str | None
) -> None:
    result = compare("out", check, original, served, Tolerance())
    if problem is None:
        assert result.passed
    else:
        assert result.problem is not None
        assert problem in result.problem


def test_float32_scores_within_the_default_tolerance_pass() -> None:
    original = np.array([[10.0, -3.0]], dtype=np.float32)
    assert compare("s", "close", original, original + 5e-4, Tolerance()).passed
    assert not compare("s", "close", original, original + 2e-2, Tolerance()).passed


def test_the_cli_imports_a_file_and_verify_parity_rechecks_it(tmp_path: Path) -> None:
    onnx.save(linear(), tmp_path / "linear.onnx")
    np.save(tmp_path / "rows.npy", ROWS)
    repository = tmp_path / "repo"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "infership", *args]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    imported = run("import", str(tmp_path / "linear.onnx"), str(repository), "--json",
                   "--example", str(tmp_path / "rows.npy"))  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["model"] == "linear"

    checked = run("verify-parity", str(tmp_path / "linear.onnx"), str(repository))
    assert checked.returncode == 0, checked.stderr
    assert "batch axis: rows agree" in checked.stdout

    onnx.save(linear(batch=2), tmp_path / "linear.onnx")  # the "original" changed since
    changed = run("verify-parity", str(tmp_path / "linear.onnx"), str(repository),
                  "--example", str(tmp_path / "rows.npy"))  # fmt: skip
    assert changed.returncode == 1
    assert "x" in changed.stderr


def test_verify_parity_of_a_version_that_is_not_there_says_so(tmp_path: Path) -> None:
    save_model(linear(), tmp_path, "linear")
    with pytest.raises(ImportFailed, match=r"no version 7"):
        verify_parity(linear(), tmp_path, "linear", 7)


def test_import_path_names_the_model_after_the_file(tmp_path: Path) -> None:
    onnx.save(linear(), tmp_path / "my model.v2.onnx")
    report = import_path(tmp_path / "my model.v2.onnx", tmp_path / "repo")
    assert report.model == "my-model"
    assert infership.__version__


def test_examples_without_rows_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match=r"the example inputs hold no rows"):
        save_model(linear(), tmp_path, "linear", example_inputs=ROWS[:0])


@pytest.mark.parametrize(
    ("value", "given"), [(True, True), ("true", True), ("yes", True), ("no", False),
                         ("false", False), (False, False), (1, False)],
)  # fmt: skip
def test_only_a_clear_yes_is_consent(value: object, given: bool) -> None:
    from infership.importing.source import consents

    assert consents(ImportOptions("m", settings={"trust_pickle": value}), "trust_pickle") is given


def test_examples_that_are_not_plain_arrays_are_a_usage_error(tmp_path: Path) -> None:
    onnx.save(linear(), tmp_path / "linear.onnx")
    np.savez(tmp_path / "rows.npz", x=np.array([{"a": 1}], dtype=object))
    command = [sys.executable, "-m", "infership", "import", str(tmp_path / "linear.onnx"),
               str(tmp_path / "repo"), "--example", str(tmp_path / "rows.npz")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "not a .npy or .npz of plain arrays" in done.stderr


@pytest.mark.parametrize(
    "bad", [{"atol": -1.0}, {"rtol": float("nan")}, {"min_cosine": 2.0}, {"min_top1": -0.1}]
)
def test_a_tolerance_that_means_nothing_is_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ImportFailed, match=r"must be"):
        Tolerance(**bad)  # type: ignore[arg-type]
