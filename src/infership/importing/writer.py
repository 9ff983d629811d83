"""Putting an imported version into a repository: staged beside it, moved in only when checked.

Layout while an import runs::

    repository/
      .import-iris-3f9c2a/          hidden: no model name starts with "."
        iris/                       a one-model repository the parity check serves
          model.yaml
          labels.txt
          2/model.onnx ...          the next version number of repository/iris
      iris/                         untouched until the move
        model.yaml
        1/ ...

A new model moves in whole (one rename). A new version of an existing model moves its version
folder in (one rename) and adds its digests to the existing ``model.yaml``, which must
otherwise say the same thing: ``model.yaml`` and ``labels.txt`` belong to the model, not to a
version, so an import that would change them for the versions already there is refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infership.errors import ConfigError, ImportFailed
from infership.repository.digests import add_digests
from infership.repository.manifest import (
    MANIFEST_NAME,
    ModelManifest,
    check_model_name,
    load_manifest,
)

LABELS = "labels.txt"
LOCK = ".import.lock"
"""Held while a version moves in; hidden, like the staging folders, from model discovery."""
_COMPARED_AS_THE_MODEL = {"sha256", "name", "description"}
"""Fields a new version may change: everything else in model.yaml is shared by all versions."""


@dataclass(frozen=True)
class Staged:
    """A version being imported."""

    root: Path
    """The hidden one-model repository the parity check serves."""
    name: str
    version: int

    @property
    def model_dir(self) -> Path:
        return self.root / self.name

    @property
    def version_dir(self) -> Path:
        return self.model_dir / str(self.version)


def next_version(model_dir: Path) -> int:
    """One more than the newest version folder, 1 for a new model."""
    versions = [int(p.name) for p in model_dir.glob("[0-9]*") if p.name.isdigit()]
    return max(versions, default=0) + 1


@contextmanager
def staging(repository: Path, name: str) -> Iterator[Staged]:
    """A hidden staging folder in ``repository`` (so the final move is a rename on one file
    system), removed on the way out whatever happens."""
    try:
        check_model_name(name)
    except Exception as exc:
        raise ImportFailed(str(exc)) from None
    repository.mkdir(parents=True, exist_ok=True)
    root = repository / f".import-{name}-{secrets.token_hex(3)}"
    staged = Staged(root, name, next_version(repository / name))
    staged.version_dir.mkdir(parents=True)
    try:
        yield staged
    finally:
        shutil.rmtree(root, ignore_errors=True)


def write_manifest(
    staged: Staged, manifest: dict[str, Any], labels: tuple[str, ...] | None
) -> ModelManifest:
    """Write the staged ``model.yaml`` (and ``labels.txt``) with the digests of every file,
    then read it back with the server's own validation: a source that describes its export
    wrongly fails here, naming the field."""
    settings = dict(manifest)
    if labels is not None:
        (staged.model_dir / LABELS).write_text("".join(f"{label}\n" for label in labels))
        classification = settings.get("postprocess", {}).get("classification")
        if classification is not None:
            classification.setdefault("labels", LABELS)
    settings["sha256"] = digests(staged)
    path = staged.model_dir / MANIFEST_NAME
    path.write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))
    try:
        return load_manifest(path)
    except ConfigError as exc:
        raise ImportFailed(f"the importer described its export wrongly: {exc}") from exc


def digests(staged: Staged) -> dict[str, str]:
    """sha256 of each file of the staged version and of the labels, as ``model.yaml`` keys
    them (relative to the model folder)."""
    files = sorted(p for p in staged.version_dir.rglob("*") if p.is_file())
    if (staged.model_dir / LABELS).is_file():
        files.append(staged.model_dir / LABELS)
    return {
        p.relative_to(staged.model_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
    }


def check_fits(staged: Staged, repository: Path) -> None:
    """Before the slow part: a new version of an existing model must keep its model-level
    settings (ImportFailed names the first that differs)."""
    if (repository / staged.name).exists():
        _same_model(staged, repository / staged.name)


def commit(staged: Staged, repository: Path) -> Path:
    """Move the staged version into ``repository``; its final folder. A new model moves whole;
    a new version of an existing one is checked again (the repository may have changed while
    the parity check ran) and needs its version number still free. Imports into one
    repository commit one at a time (a lock file), so two never race for a version number or
    for ``model.yaml``; a failure leaves the repository as it was."""
    with _locked(repository):
        target = repository / staged.name
        if not target.exists():
            _rename(staged.model_dir, target)
            return target / str(staged.version)
        _same_model(staged, target)
        final = target / str(staged.version)
        if final.exists():
            raise ImportFailed(f"{final}: version {staged.version} appeared while importing; retry")
        new = digests(staged)
        _rename(staged.version_dir, final)
        try:
            add_digests(target / MANIFEST_NAME, {k: v for k, v in new.items() if k != LABELS})
        except BaseException:
            final.rename(staged.version_dir)
            raise
        return final


@contextmanager
def _locked(repository: Path) -> Iterator[None]:
    with (repository / LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _rename(source: Path, target: Path) -> None:
    try:
        source.rename(target)
    except OSError as exc:
        raise ImportFailed(
            f"{target}: could not move the import in ({exc.strerror}); retry"
        ) from exc


def _same_model(staged: Staged, target: Path) -> None:
    try:
        existing = load_manifest(target / MANIFEST_NAME).model_dump(mode="json")
    except ConfigError as exc:
        raise ImportFailed(f"the model already in the repository is broken: {exc}") from exc
    incoming = load_manifest(staged.model_dir / MANIFEST_NAME).model_dump(mode="json")
    for field in incoming:
        if field in _COMPARED_AS_THE_MODEL or incoming[field] == existing.get(field):
            continue
        raise ImportFailed(
            f"{target / MANIFEST_NAME}: field {field!r} would change from "
            f"{_short(existing.get(field))} to {_short(incoming[field])}; model.yaml is shared by "
            "every version, so import under a new name or move the old versions away"
        )
    labels, new_labels = target / LABELS, staged.model_dir / LABELS
    old = labels.read_text() if labels.is_file() else None
    if new_labels.is_file() and old != new_labels.read_text():
        raise ImportFailed(
            f"{labels}: the new version's class labels differ from the model's; import under a "
            "new name"
        )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 160 else f"{text[:157]}..."
