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
from dataclasses import dataclass
from pathlib import Path

from infership.errors import ConfigError, DigestMismatch, ModelNotFound
from infership.repository.manifest import (
    MANIFEST_NAME,
    LatestVersions,
    ModelManifest,
    SpecificVersions,
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
        """True when ``name`` is a model folder of this repository (never a path outside it)."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            return False
        return (self.root / name / MANIFEST_NAME).is_file()

    def find(self, name: str) -> ModelSource:
        """Read and validate one model. Raises ModelNotFound or ConfigError (naming the file)."""
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
    return digest.hexdigest()


def _select_versions(manifest_path: Path, manifest: ModelManifest) -> tuple[int, ...]:
    folder = manifest_path.parent
    available = sorted(
        int(p.name)
        for p in folder.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit() and int(p.name)
    )
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


def _check_files_exist(manifest_path: Path, source: ModelSource) -> None:
    manifest = source.manifest
    for version in source.versions:
        if not source.artifact(version).is_file():
            raise ConfigError(
                f"{manifest_path}: field 'artifact': {source.artifact(version)} does not exist"
            )
    labels = manifest.postprocess.classification and manifest.postprocess.classification.labels
    if labels and not (source.directory / labels).is_file():
        raise ConfigError(
            f"{manifest_path}: field 'postprocess.classification.labels': "
            f"{source.directory / labels} does not exist"
        )
    signing = manifest.signing
    for field, key in [("public_key", signing.public_key)] + [
        (f"certificate_chain.{i}", c) for i, c in enumerate(signing.certificate_chain)
    ]:
        if key is not None and not (source.directory / key).is_file():
            raise ConfigError(
                f"{manifest_path}: field 'signing.{field}': {source.directory / key} does not exist"
            )
    for relative in manifest.sha256:
        if not (source.directory / relative).is_file():
            raise ConfigError(
                f"{manifest_path}: field 'sha256.{relative}': {source.directory / relative} "
                "does not exist"
            )
