"""``save_model`` and ``import_path``: one call from a trained model to a checked, servable
version in a repository. The steps are the same for every framework:

1. find the source (``registry.py``) and let it export into a staging folder;
2. write ``model.yaml`` with digests (``writer.py``), validated as the server validates it;
3. run the original on the examples, serve the staged version with the server's own code and
   compare (``parity.py``); a failed check raises ParityFailed and writes nothing;
4. write ``import-report.json`` beside the artefact and move the version into the repository.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infership.errors import ImportFailed, InfershipError, ParityFailed
from infership.importing import registry, writer
from infership.importing.parity import (
    BATCH_ROWS,
    DEFAULT_TOLERANCE,
    ParityReport,
    Tolerance,
    check_parity,
    describe,
)
from infership.importing.source import Exported, ImportOptions, Source, rows

REPORT = "import-report.json"


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote and measured."""

    model: str
    version: int
    path: Path
    """The new version folder."""
    source: str
    framework: str
    manifest: dict[str, Any]
    parity: ParityReport
    notes: tuple[str, ...] = ()
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each step: export, parity."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "path": str(self.path),
            "source": self.source,
            "framework": self.framework,
            "manifest": self.manifest,
            "parity": self.parity.as_dict(),
            "notes": list(self.notes),
            "seconds": self.seconds,
        }

    def __str__(self) -> str:
        lines = [
            f"imported {self.framework or self.source} as {self.model} version {self.version}: "
            f"{self.path}",
            describe(self.parity),
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def save_model(
    model: object,
    repository: str | Path,
    name: str,
    *,
    example_inputs: Mapping[str, Any] | Any = None,
    labels: list[str] | tuple[str, ...] | None = None,
    preprocess: Any = None,
    format: str | None = None,
    opset: int | None = None,
    settings: Mapping[str, Any] | None = None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    source: str | None = None,
) -> ImportReport:
    """Export ``model`` (a scikit-learn estimator, torch module, Keras model, Hugging Face
    model, ...) into ``repository/name/<next version>/``, checked against the original.

    ``example_inputs``: rows as the served model will take them (an array for a one-input
    model, or a mapping name → array), used to trace the export and for the parity check.
    ``preprocess``: the model's own pre-processing (a torchvision transform, a Hugging Face
    tokenizer or image processor) to map onto the server's built-in pipelines.
    Raises ImportFailed (nothing written) or ParityFailed (the export differs; nothing written).
    """
    chosen = registry.source(source) if source else registry.for_object(model)
    options = _options(name, example_inputs, labels, preprocess, format, opset, settings)
    return _import(chosen, model, Path(repository), options, tolerance)


def import_path(
    path: str | Path,
    repository: str | Path,
    name: str | None = None,
    *,
    example_inputs: Mapping[str, Any] | Any = None,
    labels: list[str] | tuple[str, ...] | None = None,
    format: str | None = None,
    opset: int | None = None,
    settings: Mapping[str, Any] | None = None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    source: str | None = None,
) -> ImportReport:
    """``save_model`` for a model saved on disk (``infership import``): the source that
    recognises ``path`` loads it (never running code from the file without
    ``settings={"trust_pickle": True}``) and exports it. ``name`` defaults to the file's stem."""
    path = Path(path)
    chosen = registry.source(source) if source else registry.for_path(path)
    name = name or name_from(path)
    options = _options(name, example_inputs, labels, None, format, opset, settings)
    model = _load(chosen, path, options)
    return _import(chosen, model, Path(repository), options, tolerance)


def verify_parity(
    model: object,
    repository: str | Path,
    name: str,
    version: int | None = None,
    *,
    example_inputs: Mapping[str, Any] | Any = None,
    labels: list[str] | tuple[str, ...] | None = None,
    preprocess: Any = None,
    format: str | None = None,
    opset: int | None = None,
    settings: Mapping[str, Any] | None = None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    source: str | None = None,
) -> ParityReport:
    """Check a version already in the repository against the original, later: after an edit
    of ``model.yaml``, an ``optimize``, a server upgrade. ``model`` is the live object or a
    path (as ``import_path`` takes it); the import options must be those the version was made
    with, since they decide the examples and what is compared. Writes nothing."""
    import tempfile

    repository = Path(repository)
    options = _options(name, example_inputs, labels, preprocess, format, opset, settings)
    if isinstance(model, str | Path):
        chosen = registry.source(source) if source else registry.for_path(Path(model))
        model = _load(chosen, Path(model), options)
    else:
        chosen = registry.source(source) if source else registry.for_object(model)
    if version is None:
        version = writer.next_version(repository / name) - 1
    if not (repository / name / str(version)).is_dir():
        raise ImportFailed(f"{repository / name}: no version {version}")
    with tempfile.TemporaryDirectory() as scratch:
        exported = _export(chosen, model, options, Path(scratch))
        return _parity(repository, name, version, exported, tolerance)


def _options(
    name: str,
    example_inputs: Any,
    labels: list[str] | tuple[str, ...] | None,
    preprocess: Any,
    format: str | None,
    opset: int | None,
    settings: Mapping[str, Any] | None,
) -> ImportOptions:
    return ImportOptions(
        name=name,
        example_inputs=example_inputs,
        labels=None if labels is None else tuple(str(label) for label in labels),
        preprocess=preprocess,
        format=format,
        opset=opset,
        settings=dict(settings or {}),
    )


def _import(
    source: Source,
    model: object,
    repository: Path,
    options: ImportOptions,
    tolerance: Tolerance,
) -> ImportReport:
    seconds: dict[str, float] = {}
    with writer.staging(repository, options.name) as staged:
        started = time.perf_counter()
        exported = _export(source, model, options, staged.version_dir)
        seconds["export"] = time.perf_counter() - started
        writer.write_manifest(staged, exported.manifest, exported.labels)
        writer.check_fits(staged, repository)
        started = time.perf_counter()
        parity = _parity(staged.root, staged.name, staged.version, exported, tolerance)
        seconds["parity"] = time.perf_counter() - started
        if not parity.passed:
            raise ParityFailed(
                f"{options.name}: the exported model differs from the original, so nothing "
                f"was written: {'; '.join(parity.problems())}\n{describe(parity)}"
            )
        report = ImportReport(
            model=options.name,
            version=staged.version,
            path=repository / options.name / str(staged.version),
            source=source.name,
            framework=exported.framework,
            manifest=exported.manifest,
            parity=parity,
            notes=tuple(exported.notes),
            seconds=seconds,
        )
        (staged.version_dir / REPORT).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        writer.write_manifest(staged, exported.manifest, exported.labels)
        writer.commit(staged, repository)
    return report


def _load(source: Source, path: Path, options: ImportOptions) -> object:
    """``source.load``, with a framework's own errors (a corrupt file, a missing module) as
    ImportFailed naming the file."""
    try:
        return source.load(path, options)
    except InfershipError:
        raise
    except ModuleNotFoundError as exc:
        raise ImportFailed(
            f"loading {path} needs {exc.name}: pip install 'infership[{source.extra}]'"
        ) from exc
    except Exception as exc:
        raise ImportFailed(f"{path}: {source.name} could not load it: {exc}") from exc


def _export(source: Source, model: object, options: ImportOptions, folder: Path) -> Exported:
    try:
        exported = source.export(model, options, folder)
    except InfershipError:
        raise
    except ModuleNotFoundError as exc:
        raise ImportFailed(
            f"importing a {source.name} model needs {exc.name}: "
            f"pip install 'infership[{source.extra}]'"
        ) from exc
    if not exported.checks:
        raise ImportFailed(f"the {source.name} importer named no output to check")
    return exported


def _parity(
    repository: Path, name: str, version: int, exported: Exported, tolerance: Tolerance
) -> ParityReport:
    examples = {k: np.asarray(v) for k, v in exported.examples.items()}
    rows(examples)
    # A model that cannot batch may not take all rows at once in the original either.
    max_batch = int(exported.manifest.get("batching", {}).get("max_batch_size", BATCH_ROWS))
    one_at_a_time = max_batch == 1
    try:
        if one_at_a_time:
            answers = [exported.original({k: v[i : i + 1] for k, v in examples.items()})
                       for i in range(rows(examples))]  # fmt: skip
            original = {k: np.concatenate([a[k] for a in answers]) for k in answers[0]}
        else:
            original = exported.original(dict(examples))
    except Exception as exc:
        raise ImportFailed(
            f"the original model failed on the example inputs: {type(exc).__name__}: {exc}"
        ) from exc
    missing = sorted(set(exported.checks) - set(original))
    if missing:
        raise ImportFailed(f"the original model gave no output {missing[0]!r} to compare")
    # All examples in one request (at least 8 rows, at most what the model takes at once).
    batch_rows = min(max_batch, max(rows(examples), BATCH_ROWS))
    checks = exported.checks
    return check_parity(
        repository, name, version, original, examples, checks, tolerance, batch_rows
    )


def name_from(path: Path) -> str:
    stem = path.name.split(".")[0] if path.is_file() else path.name
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in stem).strip("-.")
    return cleaned or "model"
