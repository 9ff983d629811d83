"""The on-disk repository: version selection, missing files, digests."""

from __future__ import annotations

from pathlib import Path

import pytest

from infership.app import EXAMPLE_REPOSITORY
from infership.errors import ConfigError, DigestMismatch, ModelNotFound
from infership.repository import FilesystemRepository
from infership.repository.filesystem import file_sha256


def make_model(root: Path, versions: list[int], policy: str = "latest") -> Path:
    folder = root / "m"
    folder.mkdir(parents=True)
    (folder / "model.yaml").write_text(f"version_policy: {policy}\n")
    for v in versions:
        (folder / str(v)).mkdir()
        (folder / str(v) / "model.onnx").write_bytes(b"onnx")
    return folder


def test_example_repository_lists_and_verifies_the_example() -> None:
    repository = FilesystemRepository(EXAMPLE_REPOSITORY)
    assert repository.names() == ["efficientnet-lite0"]
    source = repository.find("efficientnet-lite0")
    assert source.versions == (1,)
    source.verify()  # the digests recorded by scripts/export_example.py hold


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("latest", (3,)),
        ("all", (1, 2, 3)),
        ("{latest: 2}", (2, 3)),
        ("{specific: [1, 3]}", (1, 3)),
    ],
)
def test_version_policy_selects_versions(
    tmp_path: Path, policy: str, expected: tuple[int, ...]
) -> None:
    make_model(tmp_path, [1, 2, 3], policy)
    assert FilesystemRepository(tmp_path).find("m").versions == expected


def test_specific_version_without_folder_is_refused(tmp_path: Path) -> None:
    make_model(tmp_path, [1], "{specific: [1, 4]}")
    with pytest.raises(ConfigError, match=r"version_policy\.specific.*\[4\]"):
        FilesystemRepository(tmp_path).find("m")


def test_missing_artifact_names_the_field_and_path(tmp_path: Path) -> None:
    folder = make_model(tmp_path, [1])
    (folder / "1" / "model.onnx").unlink()
    with pytest.raises(ConfigError, match=r"field 'artifact'.*1/model\.onnx does not exist"):
        FilesystemRepository(tmp_path).find("m")


def test_no_version_folders_is_refused(tmp_path: Path) -> None:
    make_model(tmp_path, [])
    with pytest.raises(ConfigError, match="no version folders"):
        FilesystemRepository(tmp_path).find("m")


def test_digest_mismatch_names_the_file(tmp_path: Path) -> None:
    folder = make_model(tmp_path, [1])
    good = file_sha256(folder / "1" / "model.onnx")
    (folder / "model.yaml").write_text(f"sha256: {{1/model.onnx: {good}}}\n")
    FilesystemRepository(tmp_path).find("m").verify()
    (folder / "1" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(DigestMismatch, match=r"sha256\.1/model\.onnx.*expected " + good):
        FilesystemRepository(tmp_path).find("m").verify()


def test_unknown_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="'nope'"):
        FilesystemRepository(tmp_path).find("nope")


def test_path_traversal_names_are_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        FilesystemRepository(tmp_path).find("../etc")


def test_repository_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder"):
        FilesystemRepository(tmp_path / "missing")
