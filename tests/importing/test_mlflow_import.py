"""MLflow model directories, written by mlflow's own ``save_model``, imported with
``import_path``, served for real and asked with tritonclient; the answers are compared with
mlflow's own ``pyfunc.load_model(...).predict`` on the same rows."""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import yaml

from infership.errors import ImportFailed
from infership.importing import import_path
from infership.importing.registry import for_object, for_path, source
from infership.importing.sources.mlflow import MlflowSource, read_mlmodel

from .conftest import missing, served_outputs


def _framework(name: str) -> ModuleType:
    """The framework, or a skip (a failure in CI, where every extra is installed)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing(f"{name} is not installed ({exc.name}): pip install 'infership[mlflow]'")


@pytest.fixture(scope="module")
def mlflow() -> ModuleType:
    with warnings.catch_warnings():  # mlflow's advice on import (type hints)
        warnings.simplefilter("ignore")
        _framework("mlflow.pyfunc")
        importlib.import_module("mlflow.sklearn")
        importlib.import_module("mlflow.onnx")
        return importlib.import_module("mlflow")


TRUST = {"trust_pickle": True}


@contextmanager
def _quiet() -> Iterator[None]:
    """Without mlflow's advice (type hints, pickles, integer columns), which the test suite's
    warning filter would turn into errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _saved(save: Any, *args: Any, **kwargs: Any) -> None:
    """mlflow's own ``save_model``, told the requirements: inferring them loads the model again
    in a subprocess (seconds)."""
    kwargs.setdefault("pip_requirements", [])
    with _quiet():
        save(*args, **kwargs)


def _mlflow_predict(mlflow: ModuleType, folder: Path, data: Any) -> Any:
    """What mlflow itself answers: ``pyfunc.load_model(folder).predict(data)``."""
    with _quiet():
        model = mlflow.pyfunc.load_model(str(folder))
    return model.predict(data)


def _iris() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris

    features, target = load_iris(return_X_y=True, as_frame=True)
    return features, target


# --- python_function: through mlflow.pyfunc ----------------------------------------------------


def _affine_model(mlflow: ModuleType) -> Any:
    with _quiet():  # mlflow inspects predict's type hints as the class is made

        class Affine(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
            def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
                weights = np.array([[1.0, -2.0], [0.5, 3.0], [-1.0, 0.25]], dtype=np.float32)
                return np.tanh(model_input @ weights)

        return Affine()


@pytest.mark.e2e
def test_a_python_model_is_served_through_mlflow_pyfunc_and_answers_as_its_predict(
    mlflow: ModuleType, tmp_path: Path
) -> None:
    folder = tmp_path / "affine"
    example = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    _saved(
        mlflow.pyfunc.save_model,
        str(folder),
        python_model=_affine_model(mlflow),
        input_example=example,
        pip_requirements=["numpy"],
    )
    repository = tmp_path / "models"

    report = import_path(folder, repository, "affine", settings={**TRUST, "workers": 1})

    assert report.source == "mlflow"
    manifest = report.manifest
    assert manifest["runtime"] == "python"
    assert manifest["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
    assert manifest["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1, 2]}]
    version = repository / "affine" / "1"
    assert (version / "mlflow_model" / "MLmodel").is_file()
    requirements = (version / "requirements.txt").read_text().splitlines()
    assert requirements[0].startswith("mlflow-skinny==")
    rows = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    served = served_outputs(repository, "affine", {"input": rows}, ["predictions"])
    expected = _mlflow_predict(mlflow, folder, rows)
    np.testing.assert_allclose(served["predictions"], expected, rtol=1e-6, atol=1e-6)
    assert report.parity.passed


def _scorer(mlflow: ModuleType) -> Any:
    with _quiet():  # mlflow inspects predict's type hints as the class is made

        class Scorer(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
            """Columns in (a string and a number), a frame of two named columns out."""

            def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
                import pandas as pd

                size = model_input["name"].str.len().to_numpy()
                return pd.DataFrame(
                    {"score": model_input["weight"].to_numpy() * size, "long": size > 4}
                )

        return Scorer()


@pytest.mark.e2e
def test_a_column_signature_is_served_as_one_input_per_column_and_outputs_by_column(
    mlflow: ModuleType, tmp_path: Path
) -> None:
    import pandas as pd

    frame = pd.DataFrame({"name": ["ada", "grace", "barbara"], "weight": [0.5, 1.5, 2.0]})
    folder = tmp_path / "scorer"
    _saved(
        mlflow.pyfunc.save_model,
        str(folder),
        python_model=_scorer(mlflow),
        input_example=frame,
    )
    repository = tmp_path / "models"

    # One instance in the server process: no worker to start, each importing mlflow again.
    report = import_path(folder, repository, settings={**TRUST, "execution": "thread"})

    assert report.model == "scorer"
    assert report.manifest["python"]["execution"] == "thread"
    assert report.manifest["inputs"] == [
        {"name": "name", "datatype": "BYTES", "shape": [-1]},
        {"name": "weight", "datatype": "FP64", "shape": [-1]},
    ]
    assert [o["name"] for o in report.manifest["outputs"]] == ["score", "long"]
    ask = {
        "name": np.array([b"edsger", b"tim"], dtype=object),
        "weight": np.array([2.0, 3.0]),
    }
    served = served_outputs(repository, "scorer", ask, ["score", "long"])
    expected = _mlflow_predict(
        mlflow, folder, pd.DataFrame({"name": ["edsger", "tim"], "weight": [2.0, 3.0]})
    )
    np.testing.assert_allclose(served["score"], expected["score"].to_numpy())
    np.testing.assert_array_equal(served["long"], expected["long"].to_numpy())


def test_a_python_model_is_imported_only_with_consent_because_its_pickle_runs_code(
    mlflow: ModuleType, tmp_path: Path
) -> None:
    folder = tmp_path / "affine"
    _saved(
        mlflow.pyfunc.save_model,
        str(folder),
        python_model=_affine_model(mlflow),
        input_example=np.zeros((1, 3), dtype=np.float32),
    )
    with pytest.raises(ImportFailed, match=r"unpickling runs code.*trust_pickle"):
        import_path(folder, tmp_path / "models")
    assert not (tmp_path / "models" / "affine").exists()


# --- flavours handed to their framework's importer ----------------------------------------------


def _tiny_onnx() -> Any:
    onnx = _framework("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["scores"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.e2e
def test_the_onnx_flavour_is_served_as_its_onnx_file(mlflow: ModuleType, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    example = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    _saved(
        mlflow.onnx.save_model,
        _tiny_onnx(),
        str(folder),
        input_example=example,
    )
    repository = tmp_path / "models"

    report = import_path(folder, repository)

    assert report.manifest["runtime"] == "onnx"
    assert "MLflow onnx flavour" in report.notes[0]
    rows = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    served = served_outputs(repository, "tiny", {"x": rows}, ["scores"])
    expected = _mlflow_predict(mlflow, folder, rows)["scores"]
    np.testing.assert_allclose(served["scores"], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_the_sklearn_flavour_is_exported_by_the_sklearn_importer(
    mlflow: ModuleType, tmp_path: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    features, target = _iris()
    model = LogisticRegression(max_iter=500).fit(features, target)
    folder = tmp_path / "iris"
    _saved(
        mlflow.sklearn.save_model,
        model,
        str(folder),
        input_example=features.iloc[:5],
    )
    assert read_mlmodel(folder)["flavors"]["sklearn"]["serialization_format"] == "skops"
    repository = tmp_path / "models"

    report = import_path(folder, repository)

    assert report.manifest["runtime"] == "onnx"
    assert report.framework.startswith("MLflow ")
    rows = features.iloc[::30]
    # The signature says double: the ONNX graph takes FP64, as the model was trained.
    served = served_outputs(
        repository, "iris", {"input": rows.to_numpy(np.float64)}, ["label", "probabilities"]
    )
    np.testing.assert_array_equal(served["label"], _mlflow_predict(mlflow, folder, rows))
    np.testing.assert_allclose(
        served["probabilities"], model.predict_proba(rows), rtol=1e-4, atol=1e-5
    )


def _xgboost(mlflow: ModuleType, folder: Path, rows: np.ndarray, target: np.ndarray) -> None:
    xgboost = _framework("xgboost")
    importlib.import_module("mlflow.xgboost")
    model = xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(rows, target)
    _saved(mlflow.xgboost.save_model, model, str(folder), input_example=rows[:4])


def _lightgbm(mlflow: ModuleType, folder: Path, rows: np.ndarray, target: np.ndarray) -> None:
    lightgbm = _framework("lightgbm")
    importlib.import_module("mlflow.lightgbm")
    model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(rows, target)
    _saved(mlflow.lightgbm.save_model, model, str(folder), input_example=rows[:4])


def _pytorch(mlflow: ModuleType, folder: Path, rows: np.ndarray, target: np.ndarray) -> None:
    torch = _framework("torch")
    importlib.import_module("mlflow.pytorch")
    from mlflow.models import infer_signature

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1)).eval()
    with _quiet():
        signature = infer_signature(rows[:4], model(torch.from_numpy(rows[:4])).detach().numpy())
    _saved(
        mlflow.pytorch.save_model,
        model,
        str(folder),
        input_example=rows[:4],
        signature=signature,
        serialization_format="pt2",  # a torch.export program: no pickle
    )


def _keras(mlflow: ModuleType, folder: Path, rows: np.ndarray, target: np.ndarray) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")  # infership's environment has no TensorFlow
    keras = _framework("keras")
    importlib.import_module("mlflow.keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    folder.mkdir()  # mlflow.keras.save_model writes the example before making the folder
    _saved(mlflow.keras.save_model, model, str(folder), input_example=rows[:4])


@pytest.mark.parametrize(
    ("flavour", "save", "importer"),
    [
        ("xgboost", _xgboost, "boosting"),
        ("lightgbm", _lightgbm, "boosting"),
        ("pytorch", _pytorch, "torch"),
        ("keras", _keras, "keras"),
    ],
)
def test_a_framework_flavour_is_exported_by_its_framework_importer_and_checked(
    mlflow: ModuleType, tmp_path: Path, flavour: str, save: Any, importer: str
) -> None:
    features, target = _iris()
    rows = features.to_numpy(np.float32)
    folder = tmp_path / flavour
    save(mlflow, folder, rows, target.to_numpy())
    assert flavour in read_mlmodel(folder)["flavors"]

    # LightGBM's skops file lists its own types as trusted: taken only with trust_pickle.
    report = import_path(folder, tmp_path / "models", settings=TRUST)

    assert report.manifest["runtime"] == "onnx"
    assert report.notes[0] == f"MLflow {flavour} flavour, exported by the {importer} importer"
    assert report.parity.passed
    assert report.parity.samples == 4  # the rows of the directory's input example


def test_a_pickled_sklearn_model_is_loaded_with_consent_through_mlflow(
    mlflow: ModuleType, tmp_path: Path
) -> None:
    from sklearn.linear_model import LogisticRegression

    features, target = _iris()
    folder = tmp_path / "pickled"
    _saved(
        mlflow.sklearn.save_model,
        LogisticRegression(max_iter=500).fit(features, target),
        str(folder),
        serialization_format="cloudpickle",
        input_example=features.iloc[:3],
    )
    with pytest.raises(ImportFailed, match="unpickling runs code"):
        MlflowSource().load(folder, _options())

    report = import_path(folder, tmp_path / "models", settings=TRUST)

    assert report.framework.startswith("MLflow 3")
    assert report.parity.passed


# --- what is refused -------------------------------------------------------------------------


def _write_mlmodel(folder: Path, flavors: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": flavors}))
    return folder


def test_a_directory_whose_flavours_have_no_importer_is_refused_naming_them(tmp_path: Path) -> None:
    folder = _write_mlmodel(tmp_path / "h2o", {"h2o": {"data": "model.h2o"}, "spacy": {}})
    with pytest.raises(ImportFailed, match=r"\['h2o', 'spacy'\] have no importer"):
        import_path(folder, tmp_path / "models")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_a_flavour_whose_file_is_missing_is_refused_naming_the_file(tmp_path: Path) -> None:
    folder = _write_mlmodel(tmp_path / "gone", {"onnx": {"data": "model.onnx"}})
    with pytest.raises(ImportFailed, match=r"'model.onnx' is missing"):
        import_path(folder, tmp_path / "models")


def test_a_flavour_file_outside_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.onnx").write_bytes(b"")
    folder = _write_mlmodel(tmp_path / "out", {"onnx": {"data": "../secret.onnx"}})
    with pytest.raises(ImportFailed, match="outside the directory"):
        import_path(folder, tmp_path / "models")


def test_a_signature_column_with_no_tensor_form_is_refused_naming_it(tmp_path: Path) -> None:
    folder = _write_mlmodel(tmp_path / "dated", {"python_function": {}})
    columns = '[{"type": "double", "name": "x"}, {"type": "datetime", "name": "when"}]'
    meta = {"flavors": {"python_function": {}}, "signature": {"inputs": columns}}
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))
    with pytest.raises(ImportFailed, match="column 'when' is of type 'datetime'"):
        import_path(folder, tmp_path / "models", settings=TRUST)


def test_mlmodel_that_is_not_a_mapping_of_flavours_is_refused(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text("- just\n- a list\n")
    with pytest.raises(ImportFailed, match="no 'flavors' mapping"):
        import_path(tmp_path, tmp_path / "models", "m")


def test_the_registry_finds_the_mlflow_importer_for_a_directory(tmp_path: Path) -> None:
    folder = _write_mlmodel(tmp_path / "any", {"python_function": {}})
    assert source("mlflow").accepts_path(folder)
    assert source("mlflow").accepts_path(folder / "MLmodel")
    assert not source("mlflow").accepts_path(tmp_path)
    assert for_object(folder).name == "mlflow"  # save_model("path/to/model", ...)
    assert for_path(folder).name == "mlflow"


def _options(**settings: Any) -> Any:
    from infership.importing.source import ImportOptions

    return ImportOptions(name="m", settings=settings)
