"""Digests added to a hand-written model.yaml: comments kept where the text allows it, a valid
manifest always, and the old file untouched when it cannot be done."""

from __future__ import annotations

from pathlib import Path

import pytest

from infership.repository.digests import add_digests
from infership.repository.manifest import load_manifest

OLD = "a" * 64
NEW = "b" * 64


@pytest.mark.parametrize(
    "sha256_block",
    [
        "",  # none yet
        "sha256: {}\n",
        f"sha256:\n  1/model.onnx: {OLD}\n",
        f"sha256: {{1/model.onnx: {OLD}}}\n",  # inline mapping
        f"sha256:  # pinned\n  1/model.onnx: {OLD}\n",  # a comment after the key
        f"sha256:\n    1/model.onnx: {OLD}\n",  # four-space indentation
    ],
)
def test_digests_are_added_to_any_valid_sha256_block(tmp_path: Path, sha256_block: str) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    manifest = folder / "model.yaml"
    manifest.write_text(f"runtime: onnx  # the runtime\n{sha256_block}")

    add_digests(manifest, {"2/model.onnx": NEW})

    digests = load_manifest(manifest).sha256
    assert digests["2/model.onnx"] == NEW
    if OLD in sha256_block:
        assert digests["1/model.onnx"] == OLD
    assert not [p.name for p in folder.iterdir() if p.name != "model.yaml"], "no scratch left"


def test_comments_survive_where_the_block_allows_it(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    manifest = folder / "model.yaml"
    manifest.write_text(f"runtime: onnx  # the runtime\nsha256:\n  1/model.onnx: {OLD}\n")
    add_digests(manifest, {"2/model.onnx": NEW})
    assert "# the runtime" in manifest.read_text()
