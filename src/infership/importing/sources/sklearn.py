"""scikit-learn estimators and pipelines, exported to ONNX with skl2onnx.

What is served (``runtime: onnx``, dynamic batch axis):

* one input ``input`` [-1, n_features], of the example rows' dtype (FP32 by default); or, when
  the examples are named columns (a mapping, or a DataFrame of mixed dtypes), one input per
  column, [-1, 1] each;
* classifiers: ``label`` (the predicted class: INT64, or BYTES for string classes) and
  ``probabilities`` ([-1, classes], no ZipMap), ``classes_`` as the labels and
  ``postprocess.classification`` on the probabilities (its top-k labels are ``top_labels``,
  so that they do not shadow ``label``);
* regressors: ``predictions`` [-1, targets] (``predict`` as a column);
* pipelines of transformers only: ``features`` (``transform``).

Saved models: ``.skops`` files load with skops, which refuses types it does not trust unless the
caller names them (``trusted``); ``.pkl``/``.pickle``/``.joblib`` are pickles, which run code
when loaded, and load only with ``trust_pickle=true``.

Pipelines holding XGBoost or LightGBM estimators take their converters from ``boosting.py``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from infership.errors import ImportFailed
from infership.importing.source import (
    Check,
    Exported,
    ImportOptions,
    Source,
    example_arrays,
    require,
    rows,
    sample_inputs,
)
from infership.types import Array, TensorSpec

ARTIFACT = "model.onnx"
DEFAULT_INPUT = "input"
MAX_BATCH_SIZE = 256
"""Tabular rows are cheap: a request may carry many of them, and concurrent small requests
merge into one onnxruntime call."""
ML_OPSET = 3
"""The ``ai.onnx.ml`` opset: skl2onnx 1.20 writes up to 3, and refuses models whose (XGBoost or
LightGBM) converters would pick a newer one unless told."""
SKOPS = ".skops"
PICKLES = (".pkl", ".pickle", ".joblib")

LABEL, PROBABILITIES, PREDICTIONS, FEATURES = "label", "probabilities", "predictions", "features"
TOP_LABELS = "top_labels"
"""``postprocess.classification``'s label output: its default (``label``) is the model's own."""

Kind = Literal["classifier", "regressor", "transformer"]


class SklearnSource(Source):
    name = "sklearn"
    extra = "sklearn"

    def accepts(self, model: object) -> bool:
        return from_package(model, "sklearn")

    def accepts_path(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() in (SKOPS, *PICKLES)

    def load(self, path: Path, options: ImportOptions) -> object:
        if path.suffix.lower() == SKOPS:
            return load_skops(path, options.settings)
        return load_pickle(path, options.settings)

    def export(self, model: object, options: ImportOptions, version_dir: Path) -> Exported:
        return export_estimator(model, options, version_dir)


def from_package(model: object, *packages: str) -> bool:
    """Whether ``model``'s class, or one it derives from, comes from one of ``packages``;
    without importing them."""
    return any(
        c.__module__.split(".")[0] in packages for c in type(model).__mro__ if c is not object
    )


# --- loading ----------------------------------------------------------------------------------


def load_skops(path: Path, settings: Mapping[str, Any]) -> object:
    """A ``.skops`` file; types skops does not trust by default must be named in
    ``settings["trusted"]`` (a list, or names separated by commas)."""
    skops_io = require("skops.io", "skops")
    try:
        untrusted = list(skops_io.get_untrusted_types(file=path))
    except Exception as exc:  # a truncated or foreign file: skops raises what zipfile raises
        raise ImportFailed(f"{path}: not a skops file skops can read: {exc}") from exc
    trusted = _names(settings.get("trusted"))
    refused = [t for t in untrusted if t not in trusted]
    if refused:
        raise ImportFailed(
            f"{path} holds types skops does not trust by default: {refused}; loading them can "
            "run their code. If you know them, trust them by name: "
            f"--set trusted={','.join(refused)} (settings={{'trusted': [...]}})"
        )
    return skops_io.load(path, trusted=untrusted or None)


def load_pickle(path: Path, settings: Mapping[str, Any]) -> object:
    """A pickle (``joblib.dump`` or ``pickle.dump``), only with ``settings["trust_pickle"]``:
    unpickling runs whatever code the file holds."""
    if not _yes(settings.get("trust_pickle")):
        raise ImportFailed(
            f"{path} is a pickle: loading it runs whatever code it holds, so it is loaded only "
            "when you trust where it came from: --set trust_pickle=true "
            "(settings={'trust_pickle': True}). Safer: save the model with skops.io.dump and "
            "import the .skops file"
        )
    joblib = require("joblib", "scikit-learn")
    try:
        return joblib.load(path)  # reads plain pickles too
    except Exception as exc:
        raise ImportFailed(f"{path}: could not be unpickled: {exc}") from exc


def _names(value: object) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        return {v.strip() for v in value.split(",") if v.strip()}
    if isinstance(value, list | tuple | set | frozenset):
        return {str(v) for v in value}
    raise ImportFailed(f"setting 'trusted' must be a list of type names, not {value!r}")


def _yes(value: object) -> bool:
    if isinstance(value, str):  # --set trust_pickle=true arrives as text
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return value is True


# --- export -----------------------------------------------------------------------------------


def export_estimator(model: object, options: ImportOptions, version_dir: Path) -> Exported:
    """Convert a fitted scikit-learn estimator or pipeline (XGBoost and LightGBM ones too, with
    their converters registered) into ``version_dir/model.onnx`` and describe it."""
    skl2onnx = require("skl2onnx", "sklearn")
    sklearn = require("sklearn", "sklearn")
    if from_package_deep(model, "xgboost", "lightgbm"):
        from infership.importing.sources.boosting import register_converters

        register_converters()
    kind = estimator_kind(model)
    examples, columns, notes = _examples(model, options)
    graph = _convert(model, kind, examples, options)
    names = _output_names(kind, [o.name for o in graph.graph.output], model)
    notes += write_graph(graph, names, version_dir, f"skl2onnx {skl2onnx.__version__}")
    labels = class_labels(model, options) if kind == "classifier" else None
    return tabular_exported(
        kind,
        examples,
        original=_original(model, kind, columns),
        labels=labels,
        notes=notes,
        framework=f"scikit-learn {sklearn.__version__} {describe(model)}",
    )


def estimator_kind(model: object) -> Kind:
    """Classifier, regressor or transformer (a pipeline is what its last step is)."""
    base = require("sklearn.base", "sklearn")
    if base.is_classifier(model):
        if not hasattr(model, "predict_proba"):
            raise ImportFailed(
                f"{describe(model)} is a classifier without predict_proba (class "
                "probabilities), which the served model answers; use one that has it (e.g. "
                "SVC(probability=True), or CalibratedClassifierCV around it)"
            )
        return "classifier"
    if base.is_regressor(model):
        return "regressor"
    if hasattr(model, "transform") and not hasattr(model, "predict"):
        return "transformer"
    raise ImportFailed(
        f"{describe(model)} is neither a classifier, a regressor nor a transformer: clusterers "
        "and outlier detectors are not imported; serve them with runtime: python "
        "(docs/python-models.md)"
    )


def _examples(
    model: object, options: ImportOptions
) -> tuple[dict[str, Array], tuple[str, ...] | None, list[str]]:
    """The parity rows as the served model takes them, the column names when the inputs are
    named columns (None: one ``input`` matrix), and what was chosen, for the report."""
    given: Any = options.example_inputs
    if _is_frame(given) and len({str(t) for t in given.dtypes}) > 1:
        given = {str(c): given[c].to_numpy() for c in given.columns}
    arrays = example_arrays(dataclasses.replace(options, example_inputs=given), DEFAULT_INPUT)
    if arrays is None:
        return _drawn(model)
    if len(arrays) == 1 and DEFAULT_INPUT in arrays:
        matrix = arrays[DEFAULT_INPUT]
        if matrix.ndim != 2:
            raise ImportFailed(
                f"example_inputs must be a 2-D array [rows, features]; got shape "
                f"{list(matrix.shape)}"
            )
        return {DEFAULT_INPUT: _servable(DEFAULT_INPUT, matrix)}, None, []
    named = {k: _servable(k, v.reshape(len(v), -1)) for k, v in arrays.items()}
    rows(named)
    note = f"one input per column: {', '.join(named)}"
    return named, tuple(named), [note]


def _drawn(model: object) -> tuple[dict[str, Array], None, list[str]]:
    width = getattr(model, "n_features_in_", None)
    if not isinstance(width, int):
        raise ImportFailed(
            f"{describe(model)} does not say how many features it takes: give example_inputs"
        )
    spec = TensorSpec(DEFAULT_INPUT, "FP32", (-1, width))
    note = (
        f"no example_inputs: parity checked on rows drawn from a standard normal, FP32 "
        f"[-1, {width}]; give real rows for a check on the data the model sees"
    )
    return sample_inputs((spec,)), None, [note]


def _servable(name: str, array: Array) -> Array:
    """The column as a client sends it: strings as BYTES (an object array of UTF-8 ``bytes``,
    as the server decodes them off the wire); other dtypes must have an ONNX tensor type."""
    if array.dtype.kind in "USO":
        flat = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape)
    if array.dtype.kind not in "fiubO":
        raise ImportFailed(f"example input {name!r} has dtype {array.dtype}, which ONNX lacks")
    return array


def _is_frame(value: object) -> bool:
    return hasattr(value, "columns") and hasattr(value, "dtypes")


def initial_types(examples: Mapping[str, Array], types: Any) -> list[tuple[str, Any]]:
    """skl2onnx's (or onnxmltools') input declarations for the examples: their dtype, their
    width, a free batch axis. ``types`` is the module holding the ``*TensorType`` classes."""
    declared = []
    for name, array in examples.items():
        kind = {
            "float32": "FloatTensorType",
            "float64": "DoubleTensorType",
            "int64": "Int64TensorType",
            "int32": "Int32TensorType",
            "bool": "BooleanTensorType",
            "object": "StringTensorType",
        }.get(array.dtype.name)
        if kind is None or not hasattr(types, kind):
            raise ImportFailed(
                f"input {name!r}: dtype {array.dtype} cannot be declared to the converter; "
                "give float32, float64, int64, int32, bool or string examples"
            )
        declared.append((name, getattr(types, kind)([None, int(array.shape[1])])))
    return declared


def _convert(
    model: object, kind: Kind, examples: Mapping[str, Array], options: ImportOptions
) -> Any:
    skl2onnx = require("skl2onnx", "sklearn")
    data_types = require("skl2onnx.common.data_types", "sklearn")
    opset = options.opset or skl2onnx.get_latest_tested_opset_version()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # converters warn about opsets they downgrade to
            return skl2onnx.convert_sklearn(
                model,
                initial_types=initial_types(examples, data_types),
                options=_converter_options(model, kind, examples),
                target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
            )
    except ImportFailed:
        raise
    except Exception as exc:  # skl2onnx raises RuntimeError, NotImplementedError, TypeError...
        raise conversion_failed(model, exc, "skl2onnx") from exc


SCALERS = ("StandardScaler", "RobustScaler", "MaxAbsScaler")


def _converter_options(
    model: object, kind: Kind, examples: Mapping[str, Array]
) -> dict[int, dict[str, Any]]:
    options: dict[int, dict[str, Any]] = {}
    if kind == "classifier":
        # ZipMap would answer a list of {class: probability} maps: one tensor instead.
        options[id(model)] = {"zipmap": False}
    if all(a.dtype != np.float64 for a in examples.values()):
        # scikit-learn scales in float64 and rounds once to float32; skl2onnx's default Scaler
        # multiplies by 1/scale in float32, which moves values across the thresholds of the
        # trees that follow. Scale in double, as scikit-learn does.
        for _, part in walk(model):
            if from_package(part, "sklearn") and type(part).__name__ in SCALERS:
                options.setdefault(id(part), {})["div"] = "div_cast"
    return options


def conversion_failed(model: object, exc: Exception, converter: str) -> ImportFailed:
    """ImportFailed naming the estimator the converter has no converter for (or the model),
    with the converter's own reason."""
    culprit, where = unconvertible(model) or (model, "")
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if len(reason) > 400:  # skl2onnx's missing-converter text is a paragraph of advice
        reason = reason[:400].rsplit(". ", 1)[0] + "."
    return ImportFailed(
        f"{converter} cannot convert {_qualname(culprit)}{where}: {reason} Register a "
        f"{converter} converter for it (skl2onnx.update_registered_converter), or serve the "
        "model with runtime: python (docs/python-models.md)"
    )


def unconvertible(model: object) -> tuple[object, str] | None:
    """The first estimator in ``model`` that skl2onnx has no converter for, and where it sits
    (`` (step 'a__b')``); None when every part has one."""
    supported = require("skl2onnx._supported_operators", "sklearn").sklearn_operator_name_map
    for path, part in walk(model):
        if type(part) not in supported:
            return part, (f" (step {path!r} of the {type(model).__name__})" if path else "")
    return None


def walk(model: object) -> Iterator[tuple[str, object]]:
    """The model, then every estimator nested in it (pipeline steps, column transformers' and
    ensembles' parts), with its ``get_params`` path."""
    yield "", model
    get_params = getattr(model, "get_params", None)
    if get_params is None:
        return
    for path, value in get_params(deep=True).items():
        if not isinstance(value, type) and hasattr(value, "fit"):
            yield path, value


def from_package_deep(model: object, *packages: str) -> bool:
    """Whether ``model`` or any estimator nested in it comes from ``packages``."""
    return any(from_package(part, *packages) for _, part in walk(model))


def _output_names(kind: Kind, produced: list[str], model: object) -> dict[str, str]:
    """The converter's output names → ours."""
    wanted = {
        "classifier": [LABEL, PROBABILITIES],
        "regressor": [PREDICTIONS],
        "transformer": [FEATURES],
    }[kind]
    if len(produced) != len(wanted):
        raise ImportFailed(
            f"the converter gave {describe(model)} the outputs {produced}; a {kind} should have "
            f"{len(wanted)} ({', '.join(wanted)})"
        )
    return dict(zip(produced, wanted, strict=True))


def write_graph(
    graph: Any, names: Mapping[str, str], version_dir: Path, converter: str
) -> list[str]:
    """Finish the converted graph (output names, free batch axis), write it as the version's
    artefact and open it as the server will; the report's note on the signature it serves."""
    finish_graph(graph, names)
    session = save_graph(graph, version_dir / ARTIFACT)
    return signature_notes(session, converter)


def tabular_exported(
    kind: Kind,
    examples: dict[str, Array],
    *,
    original: Callable[[dict[str, Array]], dict[str, Array]],
    labels: tuple[str, ...] | None,
    notes: list[str],
    framework: str,
) -> Exported:
    """A tabular ONNX model's description: its kind decides model.yaml's settings and what
    the parity check compares."""
    return Exported(
        manifest=manifest(kind, examples),
        original=original,
        examples=examples,
        checks=checks(kind),
        labels=labels,
        notes=notes,
        framework=framework,
    )


def finish_graph(graph: Any, names: Mapping[str, str]) -> None:
    """Rename the graph's outputs, and make the first dimension of every input and output
    free: converters sometimes write a fixed 1 (LightGBM's label), which would stop batching."""
    for node in graph.graph.node:
        node.output[:] = [names.get(n, n) for n in node.output]
        node.input[:] = [names.get(n, n) for n in node.input]
    for value in (*graph.graph.input, *graph.graph.output):
        value.name = names.get(value.name, value.name)
        dims = value.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
            dims[0].dim_param = "batch"


def save_graph(graph: Any, path: Path) -> Any:
    """Write the ONNX graph and open it in onnxruntime, as the server will."""
    import onnxruntime as ort

    path.write_bytes(graph.SerializeToString())
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ImportFailed(f"onnxruntime cannot load the converted model: {exc}") from exc


def signature_notes(session: Any, converter: str) -> list[str]:
    """The served signature, for the report: ``input FP32 [-1, 64]``."""
    from infership.runtimes.onnx import OnnxRuntime

    signature = OnnxRuntime(session, Path(ARTIFACT))

    def listed(specs: tuple[TensorSpec, ...]) -> str:
        return ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" for s in specs)

    return [
        f"converted with {converter}: inputs {listed(signature.inputs)}; "
        f"outputs {listed(signature.outputs)}"
    ]


def manifest(kind: Kind, examples: Mapping[str, Array]) -> dict[str, Any]:
    """``model.yaml``'s settings for an ONNX tabular model."""
    settings: dict[str, Any] = {
        "runtime": "onnx",
        "artifact": ARTIFACT,
        "batching": {"max_batch_size": MAX_BATCH_SIZE},
        # A tabular model computes in microseconds: onnxruntime's default pool (every core,
        # spinning between batches) only takes CPU from the event loop. One thread without
        # spinning cut CPU per answer by 20-50 % and p99 at c=32 by about half
        # (BENCHMARKS.md, "Imported tabular models against MLServer's runtimes").
        "onnx": {"intra_op_threads": 1, "spin_wait": False},
    }
    if any(a.dtype == object for a in examples.values()):
        # The warm-up batch would be empty strings: a category no encoder was fitted on.
        settings["warmup"] = False
    if kind == "classifier":
        classification = {"output": PROBABILITIES, "softmax": False, "label_output": TOP_LABELS}
        settings["postprocess"] = {"classification": classification}
    return settings


def checks(kind: Kind) -> dict[str, Check]:
    if kind == "classifier":
        return {PROBABILITIES: "top1", LABEL: "exact"}
    return {PREDICTIONS if kind == "regressor" else FEATURES: "close"}


def class_labels(model: object, options: ImportOptions) -> tuple[str, ...]:
    """The classes' names, in probability order: ``classes_``, unless the caller names them."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise ImportFailed(f"{describe(model)} has no classes_: is it fitted?")
    found = tuple(str(c) for c in np.asarray(classes).tolist())
    if options.labels is None:
        return found
    if len(options.labels) != len(found):
        raise ImportFailed(
            f"labels names {len(options.labels)} classes; the model has {len(found)}: {found}"
        )
    return tuple(options.labels)


def _original(
    model: Any, kind: Kind, columns: tuple[str, ...] | None
) -> Callable[[dict[str, Array]], dict[str, Array]]:
    def run(feed: dict[str, Array]) -> dict[str, Array]:
        x = feed[DEFAULT_INPUT] if columns is None else _frame(feed, columns)
        with warnings.catch_warnings():
            # A model fitted on a DataFrame warns about an array without column names.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if kind == "classifier":
                return {LABEL: np.asarray(model.predict(x)), PROBABILITIES: model.predict_proba(x)}
            if kind == "regressor":
                predicted = np.asarray(model.predict(x))
                return {PREDICTIONS: predicted.reshape(len(predicted), -1)}
            transformed = model.transform(x)
        dense = transformed.toarray() if hasattr(transformed, "toarray") else transformed
        return {FEATURES: np.asarray(dense)}

    return run


def _frame(feed: Mapping[str, Array], columns: tuple[str, ...]) -> Any:
    """Named-column inputs as the DataFrame the model was fitted on (wider ones side by side,
    as skl2onnx concatenates them)."""
    arrays = [np.asarray(feed[c]) for c in columns]
    if any(a.shape[1] != 1 for a in arrays):
        return np.hstack(arrays)
    pandas = require("pandas", "sklearn")
    return pandas.DataFrame(
        {c: _text_column(a[:, 0]) for c, a in zip(columns, arrays, strict=True)}
    )


def _text_column(values: Array) -> Array:
    if values.dtype == object:  # BYTES arrive as bytes; the model was fitted on str
        return np.array([v.decode() if isinstance(v, bytes) else v for v in values], object)
    return values


def describe(model: object) -> str:
    """``Pipeline(StandardScaler → LogisticRegression)``: the class, and a pipeline's steps."""
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps:
        inner = " → ".join(type(step).__name__ for _, step in steps)
        return f"{type(model).__name__}({inner})"
    return type(model).__name__


def _qualname(model: object) -> str:
    cls = type(model)
    return f"{cls.__qualname__} ({cls.__module__})"
