"""TensorFlow SavedModels through tf2onnx: a classifier written and trained in plain TensorFlow,
saved, imported from its folder, served, and asked with tritonclient; a SavedModel made by
Keras' own ``export``; an op tf2onnx cannot convert.

TensorFlow runs in its own virtualenv (tensorflow_venv.py): the imports happen there, in one
child process for the session, and these tests serve and compare what it left behind.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infership.errors import ImportFailed
from infership.importing import import_path
from infership.importing.registry import for_path
from infership.importing.source import ImportOptions
from infership.importing.sources.tensorflow import SavedModelFolder, SavedModelSource
from infership.repository.manifest import load_manifest

from .conftest import served_outputs
from .tensorflow_venv import tensorflow_results

SPECIES = ["setosa", "versicolor", "virginica"]


def results() -> tuple[Path, dict[str, Any], dict[str, np.ndarray]]:
    out = tensorflow_results()
    reports = json.loads((out / "results.json").read_text())
    with np.load(out / "answers.npz") as answers:
        return out / "repository", reports, dict(answers)


@pytest.mark.e2e
def test_a_saved_model_is_served_under_its_signature_names_with_its_labels() -> None:
    repository, reports, answers = results()

    served = served_outputs(
        repository,
        "mlp",
        {"measurements": answers["query"]},
        ["logits", "probabilities", "label"],
    )

    np.testing.assert_allclose(served["logits"], answers["mlp/logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(served["probabilities"], answers["mlp/probabilities"], atol=1e-5)
    expected = [SPECIES[i] for i in answers["mlp/probabilities"].argmax(axis=1)]
    assert [row[0].decode() for row in served["label"]] == expected
    manifest = load_manifest(repository / "mlp" / "model.yaml")
    classification = manifest.postprocess.classification
    assert classification is not None
    assert (classification.output, classification.softmax) == ("probabilities", False)
    assert manifest.batching.max_batch_size == 32
    parity = reports["mlp"]["parity"]
    assert parity["passed"]
    assert parity["samples"] == 32


@pytest.mark.e2e
def test_a_saved_model_from_keras_export_keeps_its_signature() -> None:
    repository, reports, answers = results()

    served = served_outputs(
        repository, "keras-export", {"features": answers["query"]}, ["output_0"]
    )

    np.testing.assert_allclose(served["output_0"], answers["keras-export/output_0"], atol=1e-5)
    assert reports["keras-export"]["parity"]["passed"]


def test_an_op_tf2onnx_cannot_convert_is_named_and_nothing_is_written() -> None:
    repository, reports, _ = results()

    assert "could not convert op 'Svd'" in reports["svd"]
    assert "PartitionedCall/Svd" in reports["svd"]
    assert not (repository / "svd").exists()


def test_a_live_tf_module_is_saved_with_its_call_as_the_signature() -> None:
    _, reports, _ = results()

    live = reports["mlp-live"]
    assert live["framework"].endswith(" Mlp")
    assert live["parity"]["passed"]
    assert {o["name"] for o in live["parity"]["outputs"]} == {"logits", "probabilities"}


def test_a_signature_the_saved_model_lacks_is_refused_naming_those_it_has() -> None:
    _, reports, _ = results()

    assert "no signature 'predict'; it has ['serving_default']" in reports["no-signature"]


def test_a_saved_model_folder_is_recognised_by_its_saved_model_pb(tmp_path: Path) -> None:
    (tmp_path / "variables").mkdir()
    (tmp_path / "saved_model.pb").write_bytes(b"")

    assert SavedModelSource().accepts_path(tmp_path)
    assert for_path(tmp_path).name == "tensorflow"
    assert SavedModelSource().accepts(SavedModelSource().load(tmp_path, ImportOptions(name="m")))
    assert not SavedModelSource().accepts_path(tmp_path / "saved_model.pb")
    assert not SavedModelSource().accepts_path(tmp_path / "variables")


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow is installed here"
)
def test_without_tensorflow_the_import_names_the_extra_to_install(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "saved_model.pb").write_bytes(b"")

    with pytest.raises(ImportFailed, match=r"pip install 'infership\[tensorflow\]'"):
        import_path(tmp_path / "model", tmp_path / "repository")
    assert not (tmp_path / "repository" / "model").exists()


def test_a_folder_handed_over_by_load_is_a_saved_model_folder(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"")

    loaded = SavedModelSource().load(tmp_path, ImportOptions(name="m"))

    assert loaded == SavedModelFolder(tmp_path)
    with pytest.raises(ImportFailed, match="not a SavedModel folder"):
        SavedModelSource().load(tmp_path / "nothing", ImportOptions(name="m"))
