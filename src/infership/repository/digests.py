"""Adding digests to a ``model.yaml`` without rewriting what its author wrote."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml

from infership.errors import ConfigError
from infership.repository.manifest import load_manifest
from infership.safeyaml import read_yaml

_BLOCK = re.compile(r"^sha256:[ \t]*(\{\s*\})?[ \t]*$", flags=re.MULTILINE)
"""An empty or block-style ``sha256:`` key, which entries can follow as indented lines."""


def add_digests(manifest_path: Path, digests: Mapping[str, str]) -> None:
    """Add ``path: sha256`` entries (paths relative to the model folder) to the file's
    ``sha256:`` block. The text is edited, so comments and layout survive; where that cannot
    give a valid manifest (an inline mapping, another indentation), the settings are written
    again as YAML. The new text is validated before it replaces the file, atomically: a
    server reloading the model never reads half a file, and a failure leaves the old one."""
    text = manifest_path.read_text(encoding="utf-8")
    lines = [f"  {path}: {digest}" for path, digest in sorted(digests.items())]
    block = _BLOCK.search(text)
    if block is None and not re.search(r"^sha256:", text, flags=re.MULTILINE):
        edited = text.rstrip("\n") + "\nsha256:\n" + "\n".join(lines) + "\n"
    elif block is not None:
        edited = text[: block.start()] + "sha256:\n" + "\n".join(lines) + text[block.end() :]
    else:
        edited = ""
    if not edited or not _valid(edited, manifest_path, digests):
        settings = read_yaml(manifest_path) or {}
        settings["sha256"] = {**(settings.get("sha256") or {}), **digests}
        edited = yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)
        if not _valid(edited, manifest_path, digests):
            raise ConfigError(f"{manifest_path}: the digests could not be added")
    _replace(manifest_path, edited)


def _valid(text: str, manifest_path: Path, digests: Mapping[str, str]) -> bool:
    """Whether ``text`` is a valid manifest holding ``digests``; checked in a scratch file
    beside the original, so relative paths and the folder name resolve the same."""
    scratch = manifest_path.parent / f".{manifest_path.name}.check"
    try:
        scratch.write_text(text, encoding="utf-8")
        manifest = load_manifest(scratch)  # the folder's name is checked, not the file's
    except ConfigError:
        return False
    finally:
        scratch.unlink(missing_ok=True)
    return all(manifest.sha256.get(k) == v for k, v in digests.items())


def _replace(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
