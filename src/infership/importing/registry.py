"""Which sources exist, in the order they are asked: the first that accepts a model gets it.

Each is named by "module:class" and imported only when asked, so a framework's converter is
loaded only when one of its models is imported. More specific sources come first: a Hugging
Face model is also a torch ``nn.Module``, a scikit-learn pipeline may hold an XGBoost model.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

from infership.errors import ImportFailed
from infership.importing.source import Source

SOURCES: dict[str, str] = {
    "mlflow": "infership.importing.sources.mlflow:MlflowSource",
    "huggingface": "infership.importing.sources.huggingface:HuggingFaceSource",
    # A Keras 3 model on the torch backend is also an nn.Module: Keras' own export names its
    # inputs and outputs, the torch importer would look for forward()'s parameters.
    "keras": "infership.importing.sources.keras:KerasSource",
    "tensorflow": "infership.importing.sources.tensorflow:SavedModelSource",
    "torch": "infership.importing.sources.torch:TorchSource",
    "boosting": "infership.importing.sources.boosting:BoostingSource",
    "sklearn": "infership.importing.sources.sklearn:SklearnSource",
    "onnx": "infership.importing.sources.onnx:OnnxSource",
}


def source(name: str) -> Source:
    """The source called ``name`` (``--from NAME``)."""
    target = SOURCES.get(name)
    if target is None:
        raise ImportFailed(f"no source {name!r}; sources are {sorted(SOURCES)}")
    module, _, attribute = target.partition(":")
    made = getattr(importlib.import_module(module), attribute)()
    assert isinstance(made, Source)
    return made


def _all() -> Iterator[Source]:
    return (source(name) for name in SOURCES)


def for_object(model: object) -> Source:
    """The source of a live model object; ImportFailed names its type when none takes it."""
    for candidate in _all():
        if candidate.accepts(model):
            return candidate
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    raise ImportFailed(
        f"no importer takes a {kind}; importers exist for {', '.join(sorted(SOURCES))} "
        "(docs/import.md)"
    )


def for_path(path: Path) -> Source:
    """The source of a model saved at ``path``."""
    if not path.exists():
        raise ImportFailed(f"{path}: no such file or folder")
    for candidate in _all():
        if candidate.accepts_path(path):
            return candidate
    raise ImportFailed(
        f"{path}: not a model any importer recognises (docs/import.md lists the formats); "
        "name the framework with --from"
    )
