"""MLflow model directories (an ``MLmodel`` file): each flavour to the importer that converts it.

MLflow saves one model with several *flavours*: the framework's own (``sklearn``, ``onnx``,
``pytorch``, ...) and ``python_function``, a generic ``predict`` through mlflow's loader. The
most servable flavour present is chosen (``--set flavor=NAME`` overrides):

- ``onnx``: the ONNX file as it is (the ``onnx`` importer);
- ``sklearn``, ``xgboost``, ``lightgbm``, ``pytorch``, ``keras``, ``tensorflow``: the model is
  loaded from its file and handed to that framework's importer (``sklearn``, ``boosting``,
  ``torch``, ``keras``, ``tensorflow``), which exports it to a graph;
- ``python_function`` alone (a ``PythonModel``, a custom loader): served by ``runtime: python``
  through ``mlflow.pyfunc`` itself (``mlflow_pyfunc.py``, copied as the version's ``model.py``),
  with the directory copied into the version folder and the signature from ``MLmodel``.

Nothing here runs code from the directory without consent: ``MLmodel`` is read with the
bounded YAML reader, skops files load as the sklearn importer loads them (the types skops
trusts by default, and those named in ``settings["trusted"]``; never the list the directory
itself names in ``skops_trusted_types``), and pickles (``serialization_format: pickle``, a
``PythonModel``, a pickled ``nn.Module``) need ``settings["trust_pickle"]``, because
unpickling runs code.
"""

from __future__ import annotations

import importlib
import json
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from infership.errors import ConfigError, ImportFailed
from infership.importing import registry
from infership.importing.source import Check, Exported, ImportOptions, Source, batching, rows
from infership.safeyaml import read_yaml
from infership.types import Array, datatype_of, numpy_dtype

MLMODEL = "MLmodel"
COPY = "mlflow_model"
"""Where the MLflow directory is copied in a pyfunc version folder."""
PYFUNC = "python_function"
MAX_EXAMPLE_BYTES = 16 * 1024 * 1024
"""An input example is a few rows; a larger file is not read."""

CONVERTED = ("onnx", "sklearn", "xgboost", "lightgbm", "pytorch", "keras", "tensorflow")
"""Flavours with a converter, most direct first: the first one present is used."""

_COLUMN_TYPES = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
}
"""MLflow's column types → tensor datatypes. ``datetime`` and the nested types (array, object,
map, any) have no tensor form and are refused."""


@dataclass(frozen=True)
class MlflowModel:
    """An MLflow model directory as ``load`` read it."""

    folder: Path
    meta: dict[str, Any]
    """``MLmodel``, parsed."""
    flavour: str
    """The flavour that will be served."""
    target: str | None = None
    """The importer the flavour's model goes to; None: served through mlflow.pyfunc."""
    model: object = None
    """What ``target`` exports: the loaded framework model (or the ONNX graph)."""


class MlflowSource(Source):
    name = "mlflow"
    extra = "mlflow"

    def accepts(self, model: object) -> bool:
        # A live PyFuncModel no longer knows the directory it came from: the directory itself
        # (a path given to save_model) is imported instead.
        if isinstance(model, (str, Path)):
            return self.accepts_path(Path(model))
        return isinstance(model, MlflowModel)

    def accepts_path(self, path: Path) -> bool:
        folder = path.parent if path.name == MLMODEL else path
        return (folder / MLMODEL).is_file()

    def load(self, path: Path, options: ImportOptions) -> MlflowModel:
        folder = path.parent if path.name == MLMODEL else path
        meta = read_mlmodel(folder)
        flavour = choose_flavour(meta, options)
        if flavour == PYFUNC:
            _consent(options, f"{folder} is served through mlflow.pyfunc, whose loader")
            return MlflowModel(folder, meta, flavour)
        conf = meta["flavors"][flavour]
        if not isinstance(conf, dict):
            raise ImportFailed(f"{folder / MLMODEL}: flavour {flavour!r} has no settings")
        target, model = _LOADERS[flavour](folder, conf, options)
        return MlflowModel(folder, meta, flavour, target, model)

    def export(self, model: object, options: ImportOptions, version_dir: Path) -> Exported:
        if isinstance(model, (str, Path)):
            model = self.load(Path(model), options)
        if not isinstance(model, MlflowModel):
            raise ImportFailed(
                f"the mlflow importer takes an MLflow model directory, not a {type(model).__name__}"
            )
        if model.target is None:
            return _export_pyfunc(model, options, version_dir)
        return _delegate(model, options, version_dir)


# --- MLmodel ---------------------------------------------------------------------------------


def read_mlmodel(folder: Path) -> dict[str, Any]:
    """``folder/MLmodel`` as a mapping with a ``flavors`` mapping (ImportFailed otherwise)."""
    path = folder / MLMODEL
    if not path.is_file():
        raise ImportFailed(f"{folder}: no {MLMODEL} file: not an MLflow model directory")
    try:
        meta = read_yaml(path)
    except ConfigError as exc:
        raise ImportFailed(str(exc)) from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("flavors"), dict):
        raise ImportFailed(f"{path}: no 'flavors' mapping: not an MLflow model")
    if not meta["flavors"]:
        raise ImportFailed(f"{path}: lists no flavour")
    return meta


def choose_flavour(meta: Mapping[str, Any], options: ImportOptions) -> str:
    """The flavour to serve: ``settings["flavor"]``, else the first of CONVERTED present,
    else python_function."""
    flavours = [str(name) for name in meta["flavors"]]
    asked = options.settings.get("flavor", options.settings.get("flavour"))
    if asked is not None:
        if asked not in flavours:
            raise ImportFailed(f"flavor {asked!r} is not in this model; it has {flavours}")
        if asked != PYFUNC and asked not in CONVERTED:
            raise ImportFailed(f"flavor {asked!r} has no importer; {_convertible()}")
        return str(asked)
    for name in CONVERTED:
        if name in flavours:
            return name
    if PYFUNC in flavours:
        return PYFUNC
    raise ImportFailed(
        f"the MLflow model's flavours {flavours} have no importer and no {PYFUNC} flavour to "
        f"serve through mlflow.pyfunc; {_convertible()}"
    )


def _convertible() -> str:
    return f"flavours imported: {', '.join(CONVERTED)}, and {PYFUNC} through mlflow.pyfunc"


def _inside(folder: Path, relative: object, what: str) -> Path:
    """``folder/relative``, refusing paths that leave the directory and files that are not
    there: ``MLmodel`` is as untrusted as the rest of the directory."""
    if not isinstance(relative, str) or not relative:
        raise ImportFailed(f"{folder / MLMODEL}: {what} names no file")
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise ImportFailed(f"{folder / MLMODEL}: {what} {relative!r} is outside the directory")
    if not path.exists():
        raise ImportFailed(f"{folder / MLMODEL}: {what} {relative!r} is missing from {folder}")
    return path


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes", "on")


def _consent(options: ImportOptions, what: str) -> None:
    if not _truthy(options.settings.get("trust_pickle")):
        raise ImportFailed(
            f"{what} unpickles Python objects, and unpickling runs code from the file: import "
            "it only if you trust where it came from, with settings={'trust_pickle': True} "
            "(--set trust_pickle=true)"
        )


# --- flavours with a converter: load, then hand over -----------------------------------------

Loaded = tuple[str, object]
"""The importer to hand over to, and what to give it."""


def _onnx(folder: Path, conf: Mapping[str, Any], options: ImportOptions) -> Loaded:
    path = _inside(folder, conf.get("data"), "the onnx flavour's data")
    try:
        import onnx
    except ModuleNotFoundError:  # the file alone; fine unless its weights are external
        return "onnx", _path_load("onnx", path, options)
    # mlflow saves tensors as external data beside the graph by default: load them too.
    return "onnx", onnx.load(str(path))


def _sklearn(folder: Path, conf: Mapping[str, Any], options: ImportOptions) -> Loaded:
    path = _inside(folder, conf.get("pickled_model"), "the sklearn flavour's pickled_model")
    if conf.get("serialization_format", "pickle") == "skops":
        return "sklearn", _path_load("sklearn", path, _skops_trust(conf, options))
    _consent(options, f"{path} is a {conf.get('serialization_format', 'pickle')} file:")
    return "sklearn", _mlflow_load("sklearn", folder)


def _xgboost(folder: Path, conf: Mapping[str, Any], options: ImportOptions) -> Loaded:
    path = _inside(folder, conf.get("data"), "the xgboost flavour's data")
    model_class = str(conf.get("model_class", "xgboost.core.Booster"))
    module, _, name = model_class.rpartition(".")
    if module.partition(".")[0] != "xgboost":  # importing any other named module runs its code
        raise ImportFailed(f"the xgboost flavour's model_class {model_class!r} is not xgboost's")
    cls = getattr(importlib.import_module(module), name)
    model = cls(model_file=str(path)) if name == "Booster" else cls()
    if name != "Booster":
        model.load_model(str(path))
    return "boosting", model


def _lightgbm(folder: Path, conf: Mapping[str, Any], options: ImportOptions) -> Loaded:
    path = _inside(folder, conf.get("data"), "the lightgbm flavour's data")
    fmt = conf.get("serialization_format")
    if fmt == "skops":
        return "boosting", _path_load("sklearn", path, _skops_trust(conf, options))
    if path.suffix == ".lgb":  # a Booster's own text format
        import lightgbm  # type: ignore[import-untyped,unused-ignore]

        return "boosting", lightgbm.Booster(model_file=str(path))
    _consent(options, f"{path} is a {fmt or 'pickle'} file:")
    return "boosting", _mlflow_load("lightgbm", folder)


def _pytorch(folder: Path, conf: Mapping[str, Any], options: ImportOptions) -> Loaded:
    data = _inside(folder, conf.get("model_data"), "the pytorch flavour's model_data")
    program = data / "model.pt2"
    if program.is_file():  # serialization_format pt2: a torch.export program, no pickle
        # The torch importer's loader checks that the archive holds no pickled payload, which
        # torch.export.load would otherwise unpickle.
        return "torch", _path_load("torch", program, options)
    _consent(options, f"{data} holds a pickled torch module (torch.save), and loading it")
    return "torch", _mlflow_load("pytorch", folder)


def _keras(folder: Path, conf: Mapping[str, Any], options: ImportOptions) -> Loaded:
    data = _inside(folder, conf.get("data", "data"), "the keras flavour's data")
    if (data / "model.keras").is_file():
        return "keras", _path_load("keras", data / "model.keras", options)
    if (data / "model" / "saved_model.pb").is_file():  # save_exported_model: a SavedModel
        return "tensorflow", _path_load("tensorflow", data / "model", options)
    raise ImportFailed(f"{data}: neither model.keras nor an exported SavedModel (model/)")


def _tensorflow(folder: Path, conf: Mapping[str, Any], options: ImportOptions) -> Loaded:
    if conf.get("saved_model_dir"):
        saved = _inside(folder, conf["saved_model_dir"], "the tensorflow flavour's saved_model_dir")
        return "tensorflow", _path_load("tensorflow", saved, options)
    data = _inside(folder, conf.get("data", "data"), "the tensorflow flavour's data")
    for name in ("model.keras", "model.h5"):
        if (data / name).is_file():
            return "keras", _path_load("keras", data / name, options)
    if (data / "model" / "saved_model.pb").is_file():
        return "tensorflow", _path_load("tensorflow", data / "model", options)
    raise ImportFailed(f"{data}: no model.keras, model.h5 or SavedModel (model/)")


_LOADERS: dict[str, Callable[[Path, Mapping[str, Any], ImportOptions], Loaded]] = {
    "onnx": _onnx,
    "sklearn": _sklearn,
    "xgboost": _xgboost,
    "lightgbm": _lightgbm,
    "pytorch": _pytorch,
    "keras": _keras,
    "tensorflow": _tensorflow,
}


def _importer(name: str) -> Source:
    try:
        return registry.source(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.startswith("infership."):
            raise ImportFailed(f"this infership has no {name} importer ({exc.name})") from exc
        raise


def _path_load(name: str, path: Path, options: ImportOptions) -> object:
    return _importer(name).load(path, options)


def _skops_trust(conf: Mapping[str, Any], options: ImportOptions) -> ImportOptions:
    """The sklearn importer's options for a skops file: the types the flavour lists in
    ``skops_trusted_types`` are trusted only with ``trust_pickle`` (they come from the same
    directory as the file, so they vouch for nothing by themselves)."""
    listed = conf.get("skops_trusted_types")
    if not listed or not _truthy(options.settings.get("trust_pickle")):
        return options
    given = options.settings.get("trusted") or []
    if isinstance(given, str):
        given = [name.strip() for name in given.split(",") if name.strip()]
    trusted = [*given, *(str(name) for name in listed)]
    return replace(options, settings={**options.settings, "trusted": trusted})


def _mlflow_load(flavour: str, folder: Path) -> object:
    """A pickled model through mlflow's own loader (after consent): it knows the pickle module
    the model was saved with and the code paths it needs."""
    try:
        with warnings.catch_warnings():  # mlflow's advice (type hints, pickles) on import
            warnings.simplefilter("ignore")
            module = importlib.import_module(f"mlflow.{flavour}")
            return module.load_model(str(folder))
    except Exception as exc:  # mlflow and unpickling raise anything
        raise ImportFailed(f"mlflow.{flavour} cannot load {folder}: {exc}") from exc


def _delegate(model: MlflowModel, options: ImportOptions, version_dir: Path) -> Exported:
    assert model.target is not None
    if options.example_inputs is None:
        example = read_input_example(model.folder, model.meta)
        if example is not None:
            given = _as_frame(example)
            if model.target == "onnx":
                given = _fit_to_graph(model.model, given)
            options = replace(options, example_inputs=given)
    try:
        exported = _importer(model.target).export(model.model, options, version_dir)
    except ImportFailed as exc:
        hint = ""
        if PYFUNC in model.meta["flavors"]:
            hint = (
                f"; --set flavor={PYFUNC} --set trust_pickle=true serves it through "
                "mlflow.pyfunc instead"
            )
        raise ImportFailed(f"MLflow {model.flavour} flavour: {exc}{hint}") from exc
    exported.notes.insert(
        0, f"MLflow {model.flavour} flavour, exported by the {model.target} importer"
    )
    exported.framework = (
        f"MLflow {_version(model.meta)} {model.flavour} flavour: {exported.framework}"
    )
    return exported


def _fit_to_graph(graph: Any, example: Any) -> Any:
    """The example named and typed as the ONNX graph's inputs: mlflow's onnx flavour saves no
    signature, and JSON's numbers read back as float64."""
    inputs = getattr(getattr(graph, "graph", None), "input", None)
    if inputs is None:  # the file's bytes: no onnx package to read it with
        return example
    from onnx import helper

    weights = {tensor.name for tensor in graph.graph.initializer}
    typed = {
        i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        for i in inputs
        if i.name not in weights  # IR < 4 lists initializers among the inputs
    }
    if not isinstance(example, Mapping):
        if len(typed) != 1:
            return example
        example = {next(iter(typed)): example}
    return {
        name: np.asarray(value).astype(typed[name]) if name in typed else value
        for name, value in example.items()
    }


def _version(meta: Mapping[str, Any]) -> str:
    return str(meta.get("mlflow_version", "?"))


# --- the input example -------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """The directory's input example: columns of a DataFrame, or tensors (``key`` None: the one
    unnamed tensor)."""

    frame: bool
    values: dict[str | int | None, Array]


def read_input_example(folder: Path, meta: Mapping[str, Any]) -> Example | None:
    """``saved_input_example_info``'s file, read without mlflow: a DataFrame (split orient) or
    ndarrays (one, or named). Other kinds (sparse, JSON objects) are not used: None."""
    info = meta.get("saved_input_example_info")
    if not isinstance(info, dict) or info.get("type") not in ("dataframe", "ndarray"):
        return None
    path = _inside(folder, info.get("artifact_path"), "the input example")
    if path.stat().st_size > MAX_EXAMPLE_BYTES:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if info.get("params") and isinstance(data, dict):
            data = data["inputs"]
        if info["type"] == "dataframe":
            if info.get("pandas_orient", "split") != "split":
                return None
            columns = list(zip(*data["data"], strict=True)) if data["data"] else []
            pairs = zip(data["columns"], columns, strict=True)
            values: dict[str | int | None, Array] = {_key(c): np.asarray(v) for c, v in pairs}
        else:
            if isinstance(data, dict):
                data = data.get("inputs", data)
            if isinstance(data, dict):
                values = {str(k): np.asarray(v) for k, v in data.items()}
            else:
                values = {None: np.asarray(data)}
        # JSON has one kind of number: the signature says which dtype each value had.
        dtypes = _example_dtypes(signature_schema(meta, "inputs") or [])
        for key, dtype in dtypes.items():
            if key in values and dtype.kind != "O":
                values[key] = values[key].astype(dtype)
        return Example(info["type"] == "dataframe", values)
    except (ValueError, KeyError, TypeError) as exc:
        raise ImportFailed(f"{path}: not an input example mlflow writes: {exc}") from exc


_COLUMN_DTYPES = {
    "boolean": np.dtype(np.bool_),
    "integer": np.dtype(np.int32),
    "long": np.dtype(np.int64),
    "float": np.dtype(np.float32),
    "double": np.dtype(np.float64),
}


def _example_dtypes(schema: list[dict[str, Any]]) -> dict[str | int | None, np.dtype[Any]]:
    """The dtype of each input the schema names (None: the one unnamed tensor), where known."""
    dtypes: dict[str | int | None, np.dtype[Any]] = {}
    for position, spec in enumerate(schema):
        name = spec.get("name")
        if spec.get("type") == "tensor":
            try:
                dtypes[name] = np.dtype(str((spec.get("tensor-spec") or {}).get("dtype")))
            except TypeError:
                continue
        elif spec.get("type") in _COLUMN_DTYPES:
            dtypes[position if name is None else str(name)] = _COLUMN_DTYPES[spec["type"]]
    return dtypes


def signature_schema(meta: Mapping[str, Any], part: str) -> list[dict[str, Any]] | None:
    """``signature.inputs`` or ``signature.outputs`` of MLmodel (JSON text), parsed; None when
    the model has none. ImportFailed when it is not a list of specs."""
    signature = meta.get("signature")
    raw = signature.get(part) if isinstance(signature, dict) else None
    if not raw:
        return None
    try:
        schema = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise ImportFailed(f"{MLMODEL}: signature {part}: not JSON: {exc}") from exc
    if not isinstance(schema, list) or not all(isinstance(spec, dict) for spec in schema):
        raise ImportFailed(f"{MLMODEL}: signature {part} is not a list of columns or tensors")
    return schema


def _key(column: object) -> str | int:
    return column if isinstance(column, (str, int)) else str(column)


def _as_frame(example: Example) -> Any:
    """The example as the framework's importer takes it: a DataFrame, an array, or a mapping."""
    if example.frame:
        try:
            import pandas as pd  # type: ignore[import-untyped,unused-ignore]
        except ModuleNotFoundError:
            return np.column_stack(list(example.values.values()))
        return pd.DataFrame(example.values)
    if list(example.values) == [None]:
        return example.values[None]
    return {str(k): v for k, v in example.values.items()}


# --- python_function: served through mlflow.pyfunc ---------------------------------------------


@dataclass(frozen=True)
class _Input:
    name: str
    key: str | int | None
    kind: str
    """MLflow's column type, or the tensor's numpy dtype."""
    datatype: str
    shape: tuple[int, ...]

    def option(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "type": self.kind}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def signature_inputs(schema: list[dict[str, Any]]) -> tuple[str, list[_Input]]:
    """The layout (columns, tensor, tensors) and the served inputs of an MLflow input schema
    (MLmodel's ``signature.inputs``, JSON)."""
    if not schema:
        raise ImportFailed("the MLflow signature has no inputs")
    tensors = [spec.get("type") == "tensor" for spec in schema]
    if all(tensors):
        if len(schema) == 1 and not schema[0].get("name"):
            return "tensor", [_tensor("input", None, schema[0])]
        unnamed = [i for i, spec in enumerate(schema) if not spec.get("name")]
        if unnamed:
            raise ImportFailed(f"the MLflow signature's tensor {unnamed[0]} has no name")
        return "tensors", [_tensor(str(s["name"]), str(s["name"]), s) for s in schema]
    if any(tensors):
        raise ImportFailed("the MLflow signature mixes tensors and columns")
    inputs = []
    for position, spec in enumerate(schema):
        column = spec.get("name")
        key = position if column is None else str(column)
        kind = str(spec.get("type"))
        if kind not in _COLUMN_TYPES:
            raise ImportFailed(
                f"the MLflow signature's column {key!r} is of type {kind!r}, which has no tensor "
                f"form; columns of types {', '.join(_COLUMN_TYPES)} can be served"
            )
        name = str(key) if column is not None else f"column_{position}"
        inputs.append(_Input(name, key, kind, _COLUMN_TYPES[kind], (-1,)))
    return "columns", inputs


def _tensor(name: str, key: str | None, spec: Mapping[str, Any]) -> _Input:
    tensor = spec.get("tensor-spec") or {}
    dtype = str(tensor.get("dtype", "float32"))
    shape = tuple(int(d) for d in tensor.get("shape", (-1,)))
    if not shape:
        raise ImportFailed(f"the MLflow signature's tensor {name!r} is a scalar: no batch axis")
    try:
        datatype = datatype_of(np.empty(0, dtype=dtype))
    except Exception as exc:
        raise ImportFailed(
            f"the MLflow signature's tensor {name!r} has dtype {dtype}: {exc}"
        ) from exc
    return _Input(name, key, dtype, datatype, shape)


def _schema(model: MlflowModel, example: Any) -> list[dict[str, Any]]:
    """MLmodel's input schema, or one mlflow infers from the example when it has none."""
    schema = signature_schema(model.meta, "inputs")
    if schema is not None:
        return schema
    if example is None:
        raise ImportFailed(
            f"{model.folder / MLMODEL} has no signature and no input example: give "
            "example_inputs (a DataFrame or array as the model's predict takes it)"
        )
    with warnings.catch_warnings():  # mlflow's advice on import and on integer columns
        warnings.simplefilter("ignore")
        from mlflow.models import infer_signature  # type: ignore[import-untyped,unused-ignore]

        inferred: list[dict[str, Any]] = infer_signature(example).inputs.to_dict()
    return inferred


def _public(layout: str, inputs: list[_Input], given: Any) -> dict[str, Array]:
    """Example rows as the served model takes them, from a DataFrame, an array or a mapping."""
    if hasattr(given, "columns") and hasattr(given, "to_numpy"):  # a DataFrame
        given = {column: given[column].to_numpy() for column in given.columns}
    elif not isinstance(given, Mapping):
        array = np.asarray(given)
        if layout == "tensor":
            given = {inputs[0].name: array}
        elif layout == "columns" and array.ndim == 2 and array.shape[1] == len(inputs):
            given = {spec.name: array[:, i] for i, spec in enumerate(inputs)}
        else:
            raise ImportFailed(f"example_inputs: give a mapping of {[s.name for s in inputs]}")
    found: dict[str, Array] = {}
    for spec in inputs:
        key = next((k for k in (spec.name, spec.key) if k is not None and k in given), None)
        if key is None:
            raise ImportFailed(f"example_inputs have no {spec.name!r}")
        found[spec.name] = _as_datatype(np.asarray(given[key]), spec)
    rows(found)
    return found


def _as_datatype(array: Array, spec: _Input) -> Array:
    if spec.datatype != "BYTES":
        return array.astype(numpy_dtype(spec.datatype), copy=False)
    encoded = np.empty(array.shape, dtype=object)
    for index, value in np.ndenumerate(array):
        item: Any = value
        encoded[index] = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    return encoded


def _export_pyfunc(model: MlflowModel, options: ImportOptions, version_dir: Path) -> Exported:
    from infership.importing.sources import mlflow_pyfunc

    _consent(options, f"{model.folder} is served through mlflow.pyfunc, whose loader")
    given = options.example_inputs
    if given is None:
        given = read_input_example(model.folder, model.meta)
    if isinstance(given, Example):
        given = _as_frame(given)
    layout, inputs = signature_inputs(_schema(model, given))
    notes = [f"MLflow {PYFUNC} flavour, served through mlflow.pyfunc (runtime: python)"]
    if given is None:
        examples = _drawn(inputs)
        notes.append("no input example: the parity check ran on rows drawn from the signature")
    else:
        examples = _public(layout, inputs, given)
    pyfunc = _load_pyfunc(model.folder)
    probe = mlflow_pyfunc.Adapter(
        {"layout": layout, "inputs": [i.option() for i in inputs], "outputs": []}
    )
    try:
        result = pyfunc.predict(probe.join(examples))
    except Exception as exc:  # the model's own code
        raise ImportFailed(f"mlflow.pyfunc's predict failed on the examples: {exc!r}") from exc
    outputs = _outputs(mlflow_pyfunc.output_layout(result), rows(examples), model.meta)
    python_options = {
        "model": COPY,
        "layout": layout,
        "inputs": [i.option() for i in inputs],
        "outputs": [{"name": n, "key": k, "datatype": d} for n, k, d, _ in outputs],
    }
    adapter = mlflow_pyfunc.Adapter(python_options)
    fixed = any(spec.shape[0] != -1 for spec in inputs)
    batches = batching(
        "the signature's tensors have a fixed first dimension" if fixed else None, notes
    )
    if options.labels is not None:
        notes.append("labels not used: a pyfunc model's outputs are served as predict gives them")
    _copy_model(model.folder, version_dir / COPY)
    shutil.copyfile(Path(mlflow_pyfunc.__file__), version_dir / "model.py")
    notes += _write_requirements(model.folder, version_dir)
    manifest: dict[str, Any] = {
        "runtime": "python",
        "python": {
            "module": "model.py",
            "class": "Model",
            "options": python_options,
            **_execution(options),
        },
        "inputs": [i.config() for i in inputs],
        "outputs": [{"name": n, "datatype": d, "shape": list(s)} for n, _, d, s in outputs],
        "batching": batches,
    }
    checks: dict[str, Check] = {
        name: "close" if datatype.startswith("FP") else "exact" for name, _, datatype, _ in outputs
    }

    def original(feed: dict[str, Array]) -> dict[str, Array]:
        return adapter.predict(pyfunc.predict, feed)

    return Exported(
        manifest=manifest,
        original=original,
        examples=examples,
        checks=checks,
        notes=notes,
        framework=f"MLflow {_version(model.meta)} {PYFUNC} ({_loader(model.meta)})",
    )


def _execution(options: ImportOptions) -> dict[str, Any]:
    """``python.execution`` and ``python.workers`` from the settings of the same names; the
    server's defaults otherwise (worker processes, one per core: a pyfunc model's code may hold
    the GIL, and a crash in it stays out of the server)."""
    chosen: dict[str, Any] = {}
    execution = options.settings.get("execution")
    if execution is not None:
        if execution not in ("process", "thread"):
            raise ImportFailed(f"setting 'execution' is process or thread, not {execution!r}")
        chosen["execution"] = execution
    workers = options.settings.get("workers")
    if workers is not None:
        try:
            chosen["workers"] = int(workers)
        except ValueError as exc:
            raise ImportFailed(f"setting 'workers' is a number, not {workers!r}") from exc
    return chosen


def _drawn(inputs: list[_Input]) -> dict[str, Array]:
    from infership.importing.source import sample_inputs
    from infership.types import TensorSpec

    return sample_inputs(tuple(TensorSpec(i.name, i.datatype, i.shape) for i in inputs))


def _load_pyfunc(folder: Path) -> Any:
    from infership.importing.sources import mlflow_pyfunc

    try:
        return mlflow_pyfunc.load(folder)
    except Exception as exc:  # mlflow, unpickling and the model's own code raise anything
        raise ImportFailed(f"mlflow.pyfunc cannot load {folder}: {exc}") from exc


def _loader(meta: Mapping[str, Any]) -> str:
    conf = meta["flavors"].get(PYFUNC) or {}
    return str(conf.get("loader_module", "?")) if isinstance(conf, dict) else "?"


def _outputs(
    found: list[tuple[str, Any, Array]], count: int, meta: Mapping[str, Any]
) -> list[tuple[str, Any, str, tuple[int, ...]]]:
    """(name, key, datatype, shape) of each output, from what predict gave on the examples;
    a single tensor output takes the signature's dimensions (-1 where it says any)."""
    described = []
    declared = _output_tensor_shape(meta) if len(found) == 1 else None
    for name, key, values in found:
        if values.ndim == 0 or len(values) != count:
            raise ImportFailed(
                f"mlflow.pyfunc's predict gave {name!r} with shape {list(values.shape)} for "
                f"{count} rows: one result a row is needed to serve it"
            )
        try:
            datatype = datatype_of(values)
        except Exception as exc:
            raise ImportFailed(f"output {name!r}: {exc}") from exc
        shape = (-1, *values.shape[1:])
        if declared is not None and len(declared) == len(shape):
            shape = (-1, *declared[1:])
        described.append((name, key, datatype, shape))
    return described


def _output_tensor_shape(meta: Mapping[str, Any]) -> tuple[int, ...] | None:
    schema = signature_schema(meta, "outputs")
    if schema is not None and len(schema) == 1:
        tensor = schema[0].get("tensor-spec")
        if isinstance(tensor, dict) and isinstance(tensor.get("shape"), list):
            return tuple(int(d) for d in tensor["shape"])
    return None


def _copy_model(folder: Path, target: Path) -> None:
    """The directory, refusing links: a link could copy files from anywhere on this machine
    into the repository."""
    for path in folder.rglob("*"):
        if path.is_symlink():
            raise ImportFailed(f"{path}: a symbolic link in the MLflow directory; copy its target")
    shutil.copytree(folder, target)


def _write_requirements(folder: Path, version_dir: Path) -> list[str]:
    """The version's requirements.txt: mlflow-skinny and pandas (pyfunc's loader) and the
    model's own requirements, each pinned to the version the parity check ran with."""
    lines = [
        _pinned("mlflow-skinny") or _pinned("mlflow") or "mlflow",
        _pinned("pandas") or "pandas",
    ]
    notes = []
    own = folder / "requirements.txt"
    if own.is_file():
        from packaging.requirements import InvalidRequirement, Requirement

        for raw in own.read_text(encoding="utf-8").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                notes.append(f"requirements.txt: {line!r} left out (not a plain requirement)")
                continue
            if requirement.name.lower() in ("mlflow", "mlflow-skinny", "pandas"):
                continue
            lines.append(_pinned(requirement.name) or str(requirement))
    (version_dir / "requirements.txt").write_text("\n".join(dict.fromkeys(lines)) + "\n")
    return notes


def _pinned(name: str) -> str | None:
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return None
