"""XGBoost and LightGBM models, exported to ONNX with onnxmltools' converters.

* Their scikit-learn estimators (``XGBClassifier``/``XGBRegressor``, ``LGBMClassifier``/
  ``LGBMRegressor``), alone or inside a scikit-learn pipeline: onnxmltools' converters are
  registered with skl2onnx and the model goes through ``sklearn.export_estimator``, so they are
  served exactly as scikit-learn models are (``label`` and ``probabilities``, or
  ``predictions``).
* Their native ``Booster`` objects, and the model files that hold no code: XGBoost's ``.json``
  and ``.ubj``, LightGBM's text model (``.txt``). The task is read from the booster's
  objective; classes are numbered 0..k-1 unless ``labels`` names them.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infership.errors import ImportFailed
from infership.importing.source import (
    Exported,
    ImportOptions,
    Source,
    example_arrays,
    require,
    sample_inputs,
)
from infership.importing.sources.sklearn import (
    DEFAULT_INPUT,
    LABEL,
    PREDICTIONS,
    PROBABILITIES,
    Kind,
    conversion_failed,
    describe,
    export_estimator,
    from_package,
    from_package_deep,
    tabular_exported,
    write_graph,
)
from infership.types import Array, TensorSpec

XGBOOST_FILES = (".json", ".ubj")
LIGHTGBM_FILES = (".txt",)
HEAD = 1 << 16
"""How much of a file is read to recognise it."""
XGBOOST_CLASSIFIERS = ("binary:logistic", "multi:softprob", "multi:softmax")
LIGHTGBM_CLASSIFIERS = ("binary", "multiclass", "multiclassova")
PACKAGES = ("xgboost", "lightgbm")
NAMES = {"xgboost": "XGBoost", "lightgbm": "LightGBM"}
CONVERTERS = {
    "xgboost": ("onnxmltools.convert.xgboost.operator_converters.XGBoost", "convert_xgboost"),
    "lightgbm": ("onnxmltools.convert.lightgbm.operator_converters.LightGbm", "convert_lightgbm"),
}
"""onnxmltools' converter for each library's scikit-learn estimators."""


class BoostingSource(Source):
    name = "boosting"
    extra = "boosting"

    def accepts(self, model: object) -> bool:
        if from_package(model, *PACKAGES):
            return True
        # A scikit-learn pipeline (or ensemble) with an XGBoost or LightGBM step in it.
        return from_package(model, "sklearn") and from_package_deep(model, *PACKAGES)

    def accepts_path(self, path: Path) -> bool:
        return _file_kind(path) is not None

    def load(self, path: Path, options: ImportOptions) -> object:
        kind = _file_kind(path)
        if kind is None:
            raise ImportFailed(f"{path}: not an XGBoost (.json, .ubj) or LightGBM (.txt) model")
        package = require(kind, "boosting")
        try:
            return package.Booster(model_file=str(path))
        except Exception as exc:  # xgboost.core.XGBoostError, lightgbm.basic.LightGBMError
            raise ImportFailed(f"{path}: {NAMES[kind]} cannot load it: {exc}") from exc

    def export(self, model: object, options: ImportOptions, version_dir: Path) -> Exported:
        if type(model).__name__ == "Booster" and from_package(model, *PACKAGES):
            return export_booster(model, options, version_dir)
        exported = export_estimator(model, options, version_dir)
        if from_package(model, *PACKAGES):  # not wrapped in a pipeline: name its own library
            package = type(model).__module__.split(".")[0]
            version = require(package, "boosting").__version__
            exported.framework = f"{NAMES[package]} {version} {describe(model)}"
        return exported


def _file_kind(path: Path) -> str | None:
    """``xgboost`` or ``lightgbm`` when ``path`` is one of their code-free model files."""
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in (*XGBOOST_FILES, *LIGHTGBM_FILES):
        return None
    with path.open("rb") as file:
        head = file.read(HEAD)
    if suffix in XGBOOST_FILES:
        # XGBoost's JSON and UBJSON both open with the "learner" object, its name as text.
        return "xgboost" if b"learner" in head else None
    return "lightgbm" if head.startswith(b"tree\nversion=") else None


@functools.cache
def register_converters() -> None:
    """Teach skl2onnx the XGBoost and LightGBM estimators (those installed), with onnxmltools'
    converters; once per process."""
    skl2onnx = require("skl2onnx", "boosting")
    shapes = require("skl2onnx.common.shape_calculator", "boosting")
    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    for package, (module, converter) in CONVERTERS.items():
        try:
            library = __import__(package)
        except ModuleNotFoundError:
            continue  # only the installed one can be in the model
        convert = getattr(require(module, "boosting"), converter)
        prefix = "XGB" if package == "xgboost" else "LGBM"
        alias = "XGBoost" if package == "xgboost" else "LightGbm"
        skl2onnx.update_registered_converter(
            getattr(library, f"{prefix}Classifier"),
            f"{alias}{prefix}Classifier",
            shapes.calculate_linear_classifier_output_shapes,
            convert,
            options=classifier_options,
        )
        skl2onnx.update_registered_converter(
            getattr(library, f"{prefix}Regressor"),
            f"{alias}{prefix}Regressor",
            shapes.calculate_linear_regressor_output_shapes,
            convert,
        )


# --- native boosters --------------------------------------------------------------------------


def export_booster(booster: Any, options: ImportOptions, version_dir: Path) -> Exported:
    """An ``xgboost.Booster`` or ``lightgbm.Booster`` → ``model.onnx`` with onnxmltools."""
    package = type(booster).__module__.split(".")[0]
    task = _xgboost_task(booster) if package == "xgboost" else _lightgbm_task(booster)
    examples, notes = _booster_examples(booster, package, options)
    graph = _convert_booster(booster, package, examples, options)
    produced = [o.name for o in graph.graph.output]
    kind: Kind = task.kind
    wanted = [LABEL, PROBABILITIES] if kind == "classifier" else [PREDICTIONS]
    if len(produced) != len(wanted):
        raise ImportFailed(
            f"onnxmltools gave the {NAMES[package]} booster (objective {task.objective!r}) the "
            f"outputs {produced}; a {kind} should have {', '.join(wanted)}"
        )
    onnxmltools = require("onnxmltools", "boosting")
    names = dict(zip(produced, wanted, strict=True))
    notes += write_graph(graph, names, version_dir, f"onnxmltools {onnxmltools.__version__}")
    labels = None
    if kind == "classifier":
        labels = _numbered_labels(task.classes, options)
        notes.append(f"objective {task.objective}: classes numbered 0..{task.classes - 1}")
    version = require(package, "boosting").__version__
    return tabular_exported(
        kind,
        examples,
        original=_booster_original(booster, package, task),
        labels=labels,
        notes=notes,
        framework=f"{NAMES[package]} {version} Booster ({task.objective})",
    )


@dataclass(frozen=True)
class _Task:
    """What a booster was trained for, read from its objective."""

    objective: str
    kind: Kind
    classes: int
    """Classes of a classifier (2 for a binary one); 0 for a regressor."""


def _xgboost_task(booster: Any) -> _Task:
    learner = json.loads(booster.save_config())["learner"]
    objective = str(learner["objective"]["name"])
    if objective not in XGBOOST_CLASSIFIERS:
        return _Task(objective, "regressor", 0)
    classes = int(learner["learner_model_param"].get("num_class", "0"))
    return _Task(objective, "classifier", max(classes, 2))


def _lightgbm_task(booster: Any) -> _Task:
    header = booster.model_to_string(num_iteration=0).split("\nTree=", 1)[0]
    line = next((x for x in header.splitlines() if x.startswith("objective=")), "objective=?")
    objective = line.removeprefix("objective=")
    if objective.split()[0] not in LIGHTGBM_CLASSIFIERS:
        return _Task(objective, "regressor", 0)
    return _Task(objective, "classifier", max(int(booster.num_model_per_iteration()), 2))


def _booster_examples(
    booster: Any, package: str, options: ImportOptions
) -> tuple[dict[str, Array], list[str]]:
    """One FP32 feature matrix, as boosters compute in float32 whatever they are given."""
    width = int(booster.num_features() if package == "xgboost" else booster.num_feature())
    arrays = example_arrays(options, DEFAULT_INPUT)
    if arrays is None:
        spec = TensorSpec(DEFAULT_INPUT, "FP32", (-1, width))
        note = (
            f"no example_inputs: parity checked on rows drawn from a standard normal, FP32 "
            f"[-1, {width}]; give real rows for a check on the data the model sees"
        )
        return sample_inputs((spec,)), [note]
    if set(arrays) != {DEFAULT_INPUT}:
        raise ImportFailed(
            f"a {NAMES[package]} booster takes one feature matrix; example_inputs names "
            f"{sorted(arrays)}"
        )
    matrix = arrays[DEFAULT_INPUT]
    if matrix.ndim != 2 or matrix.shape[1] != width or matrix.dtype.kind not in "fiub":
        raise ImportFailed(
            f"example_inputs must be numbers [rows, {width}] (the booster's features); got "
            f"{matrix.dtype} {list(matrix.shape)}"
        )
    notes = [] if matrix.dtype == np.float32 else [f"example rows cast to FP32 from {matrix.dtype}"]
    return {DEFAULT_INPUT: matrix.astype(np.float32)}, notes


def _convert_booster(
    booster: Any, package: str, examples: Mapping[str, Array], options: ImportOptions
) -> Any:
    onnxmltools = require("onnxmltools", "boosting")
    data_types = require("onnxmltools.convert.common.data_types", "boosting")
    width = int(examples[DEFAULT_INPUT].shape[1])
    declared = [(DEFAULT_INPUT, data_types.FloatTensorType([None, width]))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if package == "xgboost":
                return onnxmltools.convert_xgboost(
                    booster, initial_types=declared, target_opset=options.opset
                )
            return onnxmltools.convert_lightgbm(
                booster, initial_types=declared, target_opset=options.opset, zipmap=False
            )
    except Exception as exc:  # onnxmltools raises RuntimeError, KeyError, ...
        raise conversion_failed(booster, exc, "onnxmltools") from exc


def _numbered_labels(classes: int, options: ImportOptions) -> tuple[str, ...]:
    if options.labels is None:
        return tuple(str(i) for i in range(classes))
    if len(options.labels) != classes:
        raise ImportFailed(f"labels names {len(options.labels)} classes; the model has {classes}")
    return tuple(options.labels)


def _booster_original(
    booster: Any, package: str, task: _Task
) -> Callable[[dict[str, Array]], dict[str, Array]]:
    library = require(package, "boosting")

    def scores(x: Array) -> Array:
        if package == "lightgbm":
            return np.asarray(booster.predict(x))
        matrix = library.DMatrix(x)
        if task.objective == "multi:softmax":  # predicts class ids: probabilities from margins
            margins = np.asarray(booster.predict(matrix, output_margin=True))
            shifted: Array = np.exp(margins - margins.max(axis=1, keepdims=True))
            return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))
        return np.asarray(booster.predict(matrix, validate_features=False))

    def run(feed: dict[str, Array]) -> dict[str, Array]:
        predicted = scores(np.asarray(feed[DEFAULT_INPUT]))
        if task.kind == "regressor":
            return {PREDICTIONS: predicted.reshape(len(predicted), -1)}
        if predicted.ndim == 1:  # binary: the positive class's probability
            predicted = np.stack([1 - predicted, predicted], axis=1)
        return {LABEL: predicted.argmax(axis=1).astype(np.int64), PROBABILITIES: predicted}

    return run
