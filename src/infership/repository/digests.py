"""Adding digests to a ``model.yaml`` without rewriting what its author wrote."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from infership.repository.manifest import load_manifest


def add_digests(manifest_path: Path, digests: Mapping[str, str]) -> None:
    """Add ``path: sha256`` entries (paths relative to the model folder) to the file's
    ``sha256:`` block, creating the block if there is none. The text is edited rather than
    re-dumped, so comments and layout survive; the result is validated."""
    lines = [f"  {path}: {digest}" for path, digest in sorted(digests.items())]
    text = manifest_path.read_text(encoding="utf-8")
    block = re.search(r"^sha256:[ \t]*(\{\s*\})?[ \t]*$", text, flags=re.MULTILINE)
    if block is None:
        text = text.rstrip("\n") + "\nsha256:\n" + "\n".join(lines) + "\n"
    else:
        head, tail = text[: block.start()], text[block.end() :]
        text = head + "sha256:\n" + "\n".join(lines) + tail
    manifest_path.write_text(text, encoding="utf-8")
    load_manifest(manifest_path)  # the edit must leave a valid manifest
