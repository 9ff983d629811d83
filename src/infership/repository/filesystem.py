"""A model repository on disk, in the layout Triton and TF Serving users know::

models/
  efficientnet-lite0/
    model.yaml
    labels.txt
    1/model.onnx
    2/model.onnx
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass
from pathlib import Path

from infership.errors import ConfigError, DigestMismatch, ModelNotFound
from infership.repository.manifest import (
    MANIFEST_NAME,
    LatestVersions,
    ModelManifest,
    SpecificVersions,
    is_model_name,
    load_manifest,
)


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A validated model: its folder, its manifest and the versions its policy selects."""

    name: str
    directory: Path
    manifest: ModelManifest
    versions: tuple[int, ...]
    """Selected versions, ascending."""

    def artifact(self, version: int) -> Path:
        return self.directory / str(version) / self.manifest.artifact

    def verify(self) -> None:
        """Check every file the manifest records a digest for. Raises DigestMismatch."""
        for relative, expected in self.manifest.sha256.items():
            path = self.directory / relative
            actual = file_sha256(path)
            if actual != expected:
                raise DigestMismatch(
                    f"{self.directory / MANIFEST_NAME}: field 'sha256.{relative}': "
                    f"{path} has sha256 {actual}, expected {expected}"
                )


class FilesystemRepository:
    """Models found in the sub-folders of ``root`` that hold a ``model.yaml``."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise ConfigError(f"model repository {root} is not a folder")
        self.root = root

    def names(self) -> list[str]:
        """Every model name in the repository, sorted."""
        return sorted(p.parent.name for p in self.root.glob(f"*/{MANIFEST_NAME}"))

    def exists(self, name: str) -> bool:
        """True when ``name`` is a model folder of this repository (never a path outside it).
        Never raises: a name no folder can have, or one the file system refuses, is not there."""
        if not is_model_name(name):
            return False
        try:
            return (self.root / name / MANIFEST_NAME).is_file()
        except OSError:  # Python 3.11's is_file lets EACCES, ENAMETOOLONG and others through
            return False

    def find(self, name: str) -> ModelSource:
        """Read and validate one model. Raises ModelNotFound (also for a name no model can
        have; callers taking names from clients check them first, ``check_model_name``) or
        ConfigError (naming the file)."""
        if not self.exists(name):
            raise ModelNotFound(f"model {name!r} is not in the repository {self.root}")
        manifest_path = self.root / name / MANIFEST_NAME
        manifest = load_manifest(manifest_path)
        source = ModelSource(
            name=name,
            directory=manifest_path.parent,
            manifest=manifest,
            versions=_select_versions(manifest_path, manifest),
        )
        _check_files_exist(manifest_path, source)
        return source


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks. Raises ConfigError if unreadable."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:  # a NUL byte in the path
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    return digest.hexdigest()


def _select_versions(manifest_path: Path, manifest: ModelManifest) -> tuple[int, ...]:
    folder = manifest_path.parent
    try:
        available = sorted(int(p.name) for p in folder.iterdir() if _is_version_folder(p))
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot list the version folders: {exc.strerror}") from exc
    if not available:
        raise ConfigError(f"{folder}: no version folders (expected 1/, 2/, ...)")
    policy = manifest.version_policy
    if policy == "all":
        return tuple(available)
    if policy == "latest":
        return (available[-1],)
    if isinstance(policy, LatestVersions):
        return tuple(available[-policy.latest :])
    assert isinstance(policy, SpecificVersions)
    missing = sorted(set(policy.specific) - set(available))
    if missing:
        raise ConfigError(
            f"{manifest_path}: field 'version_policy.specific': versions {missing} have no folder"
        )
    return tuple(sorted(set(policy.specific)))


def _is_version_folder(path: Path) -> bool:
    # "1" only, not "01" or "٣": two spellings of one version would load it twice.
    name = path.name
    return name.isascii() and name.isdigit() and name == str(int(name)) and path.is_dir()


def _check_files_exist(manifest_path: Path, source: ModelSource) -> None:
    manifest = source.manifest
    for version in source.versions:
        _require_file(manifest_path, "artifact", source.artifact(version))
    labels = manifest.postprocess.classification and manifest.postprocess.classification.labels
    if labels:
        _require_file(manifest_path, "postprocess.classification.labels", source.directory / labels)
    signing = manifest.signing
    for field, key in [("public_key", signing.public_key)] + [
        (f"certificate_chain.{i}", c) for i, c in enumerate(signing.certificate_chain)
    ]:
        if key is not None:
            _require_file(manifest_path, f"signing.{field}", source.directory / key)
    for relative in manifest.sha256:
        _require_file(manifest_path, f"sha256.{relative}", source.directory / relative)


def _require_file(manifest_path: Path, field: str, path: Path) -> None:
    """Raise ConfigError naming the field unless ``path`` is a regular file we can reach.
    Paths come from model.yaml, so any OSError (or a NUL byte) is the manifest's problem."""
    where = f"{manifest_path}: field {field!r}: {path}"
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"{where}: not a usable path: {exc}") from exc
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{where} is not a regular file")
