"""scikit-learn estimators and pipelines imported with skl2onnx, served for real and compared
with ``predict_proba``/``predict``/``transform`` on scikit-learn's own datasets."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from infership.errors import ImportFailed
from infership.importing import import_path, save_model
from infership.importing.source import ImportOptions
from infership.importing.sources.sklearn import SklearnSource
from infership.repository.manifest import load_manifest

from .conftest import require, served_outputs

require("skl2onnx")
skops_io = require("skops.io")

from sklearn.base import BaseEstimator, TransformerMixin  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

IRIS = ("setosa", "versicolor", "virginica")


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows, their digits, and 40 held-out rows (FP32, as a client sends them)."""
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    return x[:1500], y[:1500], x[1500:1540]


def digits_pipeline() -> tuple[Any, np.ndarray]:
    x, y, held_out = digits()
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y), held_out


def iris_forest() -> tuple[Any, np.ndarray]:
    """A forest after a scaler, with string classes: the label output is BYTES."""
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    names = np.array(IRIS)[y]
    forest = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0)
    return make_pipeline(StandardScaler(), forest).fit(x, names), x[::5]


class Clip(TransformerMixin, BaseEstimator):
    """A custom transformer: skl2onnx has no converter for it."""

    def fit(self, x: np.ndarray, y: object = None) -> Clip:
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, 0.0, 8.0)


def clipped_iris() -> tuple[Any, np.ndarray]:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    return make_pipeline(Clip(), LogisticRegression(max_iter=1000)).fit(x, y), x[::10]


@pytest.mark.e2e
def test_a_digits_pipeline_answers_tritonclient_as_predict_proba(tmp_path: Path) -> None:
    pipeline, held_out = digits_pipeline()

    report = save_model(pipeline, tmp_path, "digits", example_inputs=held_out)
    served = served_outputs(
        tmp_path, "digits", {"input": held_out}, ["probabilities", "label", "top_labels"]
    )

    np.testing.assert_allclose(
        served["probabilities"], pipeline.predict_proba(held_out), atol=1e-5, rtol=1e-4
    )
    assert served["label"].dtype == np.int64
    np.testing.assert_array_equal(served["label"], pipeline.predict(held_out))
    assert [row[0].decode() for row in served["top_labels"]] == [
        str(d) for d in pipeline.predict(held_out)
    ]
    assert report.parity.passed
    assert report.framework == "scikit-learn 1.9.1 Pipeline(StandardScaler → LogisticRegression)"
    folder = tmp_path / "digits"
    assert (folder / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    manifest = load_manifest(folder / "model.yaml")
    assert manifest.runtime == "onnx"
    assert manifest.batching.max_batch_size == 256
    assert manifest.postprocess.classification is not None
    assert manifest.postprocess.classification.softmax is False


@pytest.mark.e2e
def test_string_classes_are_served_as_bytes_labels(tmp_path: Path) -> None:
    forest, rows = iris_forest()

    save_model(forest, tmp_path, "iris", example_inputs=rows)
    served = served_outputs(tmp_path, "iris", {"input": rows}, ["label", "probabilities"])

    assert [v.decode() for v in served["label"]] == forest.predict(rows).tolist()
    np.testing.assert_allclose(served["probabilities"], forest.predict_proba(rows), atol=1e-6)
    assert (tmp_path / "iris" / "labels.txt").read_text().split() == list(IRIS)


@pytest.mark.e2e
def test_a_regressor_answers_predictions_as_predict(tmp_path: Path) -> None:
    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    regressor = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0)
    regressor.fit(x[:400], y[:400])
    rows = x[400:]

    report = save_model(regressor, tmp_path, "diabetes", example_inputs=rows)
    served = served_outputs(tmp_path, "diabetes", {"input": rows}, ["predictions"])

    assert served["predictions"].shape == (len(rows), 1)
    np.testing.assert_allclose(served["predictions"][:, 0], regressor.predict(rows), rtol=1e-5)
    assert [o.name for o in report.parity.outputs] == ["predictions"]
    assert load_manifest(tmp_path / "diabetes" / "model.yaml").postprocess.classification is None


def test_a_transformer_pipeline_serves_its_features(tmp_path: Path) -> None:
    x, _ = load_diabetes(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), PCA(n_components=3)).fit(x)

    report = save_model(pipeline, tmp_path, "pca")

    assert report.parity.passed
    assert [(o.name, o.check) for o in report.parity.outputs] == [("features", "close")]
    assert any("drawn from a standard normal" in note for note in report.notes)


def test_a_custom_estimator_is_refused_by_name_and_nothing_is_written(tmp_path: Path) -> None:
    pipeline, x = clipped_iris()

    with pytest.raises(ImportFailed) as failure:
        save_model(pipeline, tmp_path, "custom", example_inputs=x[:4])

    message = str(failure.value)
    assert "skl2onnx cannot convert Clip (" in message
    assert "step 'clip' of the Pipeline" in message
    assert "Unable to find a shape calculator" in message  # skl2onnx's own reason
    assert not (tmp_path / "custom").exists()
    assert not list(tmp_path.iterdir())


def test_a_skops_file_is_imported_and_checked(tmp_path: Path) -> None:
    pipeline, held_out = digits_pipeline()
    skops_io.dump(pipeline, tmp_path / "digits.skops")

    report = import_path(tmp_path / "digits.skops", tmp_path / "repo", example_inputs=held_out)

    assert report.model == "digits"
    assert report.source == "sklearn"
    assert report.parity.passed


def test_a_skops_file_with_untrusted_types_is_refused_until_they_are_named(
    tmp_path: Path,
) -> None:
    pipeline, _ = clipped_iris()
    path = tmp_path / "custom.skops"
    skops_io.dump(pipeline, path)
    untrusted = f"{Clip.__module__}.Clip"

    with pytest.raises(ImportFailed, match="types skops does not trust") as failure:
        import_path(path, tmp_path / "repo")
    assert untrusted in str(failure.value)
    assert f"--set trusted={untrusted}" in str(failure.value)

    loaded = SklearnSource().load(path, ImportOptions("custom", settings={"trusted": untrusted}))
    assert type(loaded.steps[0][1]).__name__ == "Clip"


def test_a_pickle_is_loaded_only_with_explicit_trust(tmp_path: Path) -> None:
    forest, rows = iris_forest()
    path = tmp_path / "iris.pkl"
    path.write_bytes(pickle.dumps(forest))

    with pytest.raises(ImportFailed, match="runs whatever code it holds"):
        import_path(path, tmp_path / "repo", example_inputs=rows)
    assert not (tmp_path / "repo").exists()

    report = import_path(
        path, tmp_path / "repo", example_inputs=rows, settings={"trust_pickle": "true"}
    )
    assert report.parity.passed


def test_a_dataframe_of_numbers_is_served_as_one_input(tmp_path: Path) -> None:
    frame, target = load_iris(return_X_y=True, as_frame=True)
    frame = frame.astype(np.float32)
    model = LogisticRegression(max_iter=300).fit(frame, target)

    report = save_model(model, tmp_path, "frame", example_inputs=frame.iloc[::10])

    assert report.parity.passed
    assert any("inputs input FP32 [-1, 4]" in note for note in report.notes)


def test_named_columns_with_strings_are_served_one_input_per_column(tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    frame, target = load_iris(return_X_y=True, as_frame=True)
    frame = frame.iloc[:, :2].astype(np.float32).set_axis(["length", "width"], axis=1)
    frame["colour"] = np.where(np.arange(len(frame)) % 3 == 0, "red", "blue")
    columns = ColumnTransformer(
        [
            ("numbers", StandardScaler(), ["length", "width"]),
            ("colour", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
        ]
    )
    model = make_pipeline(columns, LogisticRegression(max_iter=300)).fit(frame, target)

    report = save_model(model, tmp_path, "columns", example_inputs=frame.iloc[::10])

    assert report.parity.passed
    assert load_manifest(tmp_path / "columns" / "model.yaml").warmup is False
