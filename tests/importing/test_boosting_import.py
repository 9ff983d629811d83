"""XGBoost and LightGBM models imported with onnxmltools' converters (as estimators, inside
scikit-learn pipelines, as native boosters and as their model files), served for real and
compared with ``predict_proba``/``predict`` on scikit-learn's datasets. 20 trees each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infership.errors import ImportFailed
from infership.importing import import_path, save_model
from infership.importing.registry import for_object, for_path
from infership.repository.manifest import load_manifest

from .conftest import require, served_outputs

require("onnxmltools")
require("skl2onnx")
xgb = require("xgboost")
lgb = require("lightgbm")

from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

TREES = 20
SMALL = {"n_estimators": TREES, "n_jobs": 1}
"""20 trees, one thread: the machines running the tests are shared, and OpenMP threads spinning
on busy cores make a 20-tree fit take seconds instead of milliseconds."""
IRIS = ("setosa", "versicolor", "virginica")


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    return x[:1500], y[:1500], x[1500:1540]


def diabetes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    return x[:400], y[:400], x[400:]


def xgb_digits() -> tuple[Any, np.ndarray]:
    x, y, held_out = digits()
    return xgb.XGBClassifier(max_depth=3, **SMALL).fit(x, y), held_out


@pytest.mark.e2e
def test_an_xgboost_classifier_answers_tritonclient_as_predict_proba(tmp_path: Path) -> None:
    classifier, held_out = xgb_digits()

    report = save_model(classifier, tmp_path, "xgb", example_inputs=held_out)
    served = served_outputs(tmp_path, "xgb", {"input": held_out}, ["probabilities", "label"])

    assert report.source == "boosting"
    assert report.framework.startswith("XGBoost ")
    np.testing.assert_allclose(
        served["probabilities"], classifier.predict_proba(held_out), atol=1e-6
    )
    np.testing.assert_array_equal(served["label"], classifier.predict(held_out))
    assert (tmp_path / "xgb" / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    manifest = load_manifest(tmp_path / "xgb" / "model.yaml")
    assert manifest.postprocess.classification is not None
    assert manifest.postprocess.classification.output == "probabilities"


@pytest.mark.e2e
def test_a_lightgbm_pipeline_with_string_classes_is_served_as_predict(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    classifier = lgb.LGBMClassifier(min_child_samples=5, verbose=-1, **SMALL)
    pipeline = make_pipeline(StandardScaler(), classifier).fit(x, np.array(IRIS)[y])
    rows = x[::5]

    assert for_object(pipeline).name == "boosting"  # not sklearn: its step needs onnxmltools
    save_model(pipeline, tmp_path, "lgb", example_inputs=rows)
    served = served_outputs(tmp_path, "lgb", {"input": rows}, ["probabilities", "label"])

    np.testing.assert_allclose(served["probabilities"], pipeline.predict_proba(rows), atol=1e-6)
    assert [v.decode() for v in served["label"]] == pipeline.predict(rows).tolist()


@pytest.mark.e2e
def test_a_lightgbm_regressor_answers_predictions_as_predict(tmp_path: Path) -> None:
    x, y, rows = diabetes()
    regressor = lgb.LGBMRegressor(verbose=-1, **SMALL).fit(x, y)

    save_model(regressor, tmp_path, "lgb-reg", example_inputs=rows)
    served = served_outputs(tmp_path, "lgb-reg", {"input": rows}, ["predictions"])

    np.testing.assert_allclose(served["predictions"][:, 0], regressor.predict(rows), rtol=1e-5)


def test_an_xgboost_regressor_matches_predict(tmp_path: Path) -> None:
    x, y, rows = diabetes()
    regressor = xgb.XGBRegressor(max_depth=3, **SMALL).fit(x, y)

    report = save_model(regressor, tmp_path, "xgb-reg", example_inputs=rows)

    (predictions,) = report.parity.outputs
    assert predictions.name == "predictions"
    assert predictions.passed
    assert predictions.max_rel_diff is not None
    assert predictions.max_rel_diff < 1e-5


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_an_xgboost_model_file_is_imported_as_a_booster(tmp_path: Path, suffix: str) -> None:
    classifier, held_out = xgb_digits()
    path = tmp_path / f"digits{suffix}"
    classifier.save_model(path)

    assert for_path(path).name == "boosting"
    report = import_path(path, tmp_path / "repo", example_inputs=held_out)

    assert report.model == "digits"
    assert report.framework.endswith("Booster (multi:softprob)")
    assert report.parity.passed
    assert [o.top1_agreement for o in report.parity.outputs if o.name == "probabilities"] == [1.0]


def test_a_lightgbm_model_file_is_imported_as_a_booster(tmp_path: Path) -> None:
    x, y, held_out = digits()
    classifier = lgb.LGBMClassifier(verbose=-1, **SMALL).fit(x, y)
    path = tmp_path / "digits.txt"
    classifier.booster_.save_model(path)

    report = import_path(path, tmp_path / "repo", example_inputs=held_out)

    assert report.framework.endswith("Booster (multiclass num_class:10)")
    assert report.parity.passed


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_binary_boosters_serve_both_classes_probabilities(tmp_path: Path, library: str) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    if library == "xgboost":
        booster = xgb.XGBClassifier(max_depth=3, **SMALL).fit(x, y).get_booster()
    else:
        booster = lgb.LGBMClassifier(verbose=-1, **SMALL).fit(x, y).booster_

    report = save_model(booster, tmp_path, "binary", example_inputs=x[::20], labels=["no", "yes"])

    assert report.parity.passed
    assert (tmp_path / "binary" / "labels.txt").read_text() == "no\nyes\n"
    assert any("inputs input FP32 [-1, 30]" in note for note in report.notes)
    assert any("probabilities FP32 [-1, 2]" in note for note in report.notes)


def test_an_estimator_without_a_registered_converter_is_refused_by_name(tmp_path: Path) -> None:
    x, y, _ = digits()
    forest = xgb.XGBRFClassifier(max_depth=3, **SMALL).fit(x[:300], y[:300])
    pipeline = make_pipeline(StandardScaler(), forest)
    pipeline.fit(x[:300], y[:300])

    with pytest.raises(ImportFailed) as failure:
        save_model(pipeline, tmp_path, "forest", example_inputs=x[:4])

    assert "skl2onnx cannot convert XGBRFClassifier (xgboost.sklearn)" in str(failure.value)
    assert "step 'xgbrfclassifier' of the Pipeline" in str(failure.value)
    assert not list(tmp_path.iterdir())


def test_a_json_file_that_is_not_a_model_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"threshold": 0.5}')

    with pytest.raises(ImportFailed, match="not a model any importer recognises"):
        import_path(path, tmp_path / "repo")
