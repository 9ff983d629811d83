"""``infership import`` and ``infership verify-parity``: a saved model into a repository,
checked against the original (docs/import.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from infership.cli.common import fail
from infership.errors import ImportFailed, InfershipError


def _common(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``import`` and ``verify-parity`` share: they must describe the same export."""
    options = [
        click.option(
            "--from",
            "source",
            metavar="FRAMEWORK",
            help="The importer to use (onnx, sklearn, boosting, torch, keras, tensorflow, "
            "huggingface, mlflow) [default: recognised from SOURCE].",
        ),
        click.option(
            "--example",
            "example",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            help="Example inputs: a .npy array (a model of one input) or a .npz of named arrays.",
        ),
        click.option(
            "--samples",
            type=click.Path(path_type=Path, exists=True),
            help="A folder of images (input 'image') or a text file, one text per line (input "
            "'text'), as example inputs of image and text models.",
        ),
        click.option(
            "--labels",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            help="Class names, one per line, in score order (when the model does not carry them).",
        ),
        click.option("--format", "format_", metavar="FORMAT", help="Artefact: onnx or pt2."),
        click.option("--opset", type=int, help="ONNX opset to export with."),
        click.option(
            "--set",
            "settings",
            multiple=True,
            metavar="KEY=VALUE",
            help="An importer setting (repeatable), e.g. trust_pickle=true.",
        ),
        click.option("--atol", type=float, help="Absolute tolerance [default: per datatype]."),
        click.option("--rtol", type=float, help="Relative tolerance [default: per datatype]."),
        click.option(
            "--min-cosine",
            type=float,
            default=0.9999,
            show_default=True,
            help="Embeddings: lowest cosine similarity of a row to the original's.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command("import")
@click.argument("path", metavar="SOURCE", type=click.Path(path_type=Path, exists=True))
@click.argument("repository", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", help="Model name in the repository [default: SOURCE's file name].")
@_common
def import_command(path: Path, repository: Path, name: str | None, **given: Any) -> None:
    """Import the model saved at SOURCE into REPOSITORY as its next version.

    The export is served with the server's own code and compared with the original on the
    example inputs; nothing is written unless every output matches within the tolerance.
    Exit status: 0 imported, 1 the export failed or differs, 2 bad arguments.
    """
    from infership.importing import import_path

    as_json = given.pop("as_json")
    try:
        report = import_path(path, repository, name, **_arguments(given))
    except InfershipError as exc:
        fail(str(exc), 1)
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else str(report))


@click.command("verify-parity")
@click.argument("path", metavar="SOURCE", type=click.Path(path_type=Path, exists=True))
@click.argument("repository", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--name", help="Model name in the repository [default: SOURCE's file name].")
@click.option("--version", type=int, help="Version to check [default: the newest].")
@_common
def verify_parity(
    path: Path, repository: Path, name: str | None, version: int | None, **given: Any
) -> None:
    """Check that a version in REPOSITORY still computes what the model saved at SOURCE does.

    Give the options the version was imported with. Exit status: 0 parity holds, 1 it does
    not (the outputs that differ, and by how much, are printed).
    """
    from infership.importing import verify_parity as verify
    from infership.importing.api import name_from
    from infership.importing.parity import describe

    as_json = given.pop("as_json")
    arguments = _arguments(given)
    try:
        report = verify(path, repository, name or name_from(path), version, **arguments)
    except InfershipError as exc:
        fail(str(exc), 1)
    click.echo(json.dumps(report.as_dict(), indent=2) if as_json else describe(report))
    if not report.passed:
        raise SystemExit(1)


def _arguments(given: dict[str, Any]) -> dict[str, Any]:
    from infership.importing import Tolerance

    try:
        examples = _examples(given.pop("example"), given.pop("samples"))
        settings = dict(_setting(text) for text in given.pop("settings"))
        tolerance = Tolerance(
            atol=given.pop("atol"), rtol=given.pop("rtol"), min_cosine=given.pop("min_cosine")
        )
    except ImportFailed as exc:
        fail(str(exc), 2)
    labels_path: Path | None = given.pop("labels")
    labels = None
    if labels_path is not None:
        try:
            labels = [line for line in _text(labels_path).splitlines() if line.strip()]
        except ImportFailed as exc:
            fail(str(exc), 2)
    return {
        "example_inputs": examples,
        "labels": labels,
        "format": given.pop("format_"),
        "opset": given.pop("opset"),
        "settings": settings,
        "source": given.pop("source"),
        "tolerance": tolerance,
    }


def _examples(example: Path | None, samples: Path | None) -> Any:
    import numpy as np

    from infership.optimize.samples import IMAGE_SUFFIXES

    if example is not None and samples is not None:
        raise ImportFailed("give --example or --samples, not both")
    if example is not None:
        try:
            loaded = np.load(example, allow_pickle=False)
            return dict(loaded) if hasattr(loaded, "files") else loaded
        except (ValueError, OSError) as exc:
            raise ImportFailed(f"{example}: not a .npy or .npz of plain arrays: {exc}") from exc
    if samples is None:
        return None
    if samples.is_dir():
        images = sorted(p for p in samples.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ImportFailed(f"{samples}: no images to use as samples")
        return {"image": np.array([p.read_bytes() for p in images], dtype=object)}
    texts = [line for line in _text(samples).splitlines() if line.strip()]
    if not texts:
        raise ImportFailed(f"{samples}: no texts (one per line) to use as samples")
    return {"text": np.array([t.encode() for t in texts], dtype=object)}


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFailed(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ImportFailed(f"--set {text!r}: expected KEY=VALUE")
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value
