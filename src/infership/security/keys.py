"""Model encryption keys: where the server finds them and how they are written.

A key is 32 random bytes, stored as one line of base64 so it fits a file, an environment variable
and a Kubernetes Secret alike. The server gathers every key it is given (a key file, an environment
variable, each file of a key folder such as a mounted Secret) into a ``KeyRing`` and picks the one
whose fingerprint an encrypted file's header names, so old and new keys can be mounted side by side
while a key is rotated.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infership.errors import ConfigError

KEY_BYTES = 32
_KEY_ID_CONTEXT = b"infership model key id v1\x00"


def key_id(key: bytes) -> str:
    """The key's fingerprint, 16 hex digits: safe to show and to store beside the data."""
    return hashlib.sha256(_KEY_ID_CONTEXT + key).digest()[:8].hex()


def new_key() -> str:
    """A fresh random key, as the base64 line key files and variables hold."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def parse_key(text: str, source: str) -> bytes:
    """Decode a base64 key. Raises ConfigError naming ``source``, never showing the key."""
    try:
        key = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source}: not a base64 encryption key") from None
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{source}: an encryption key must be {KEY_BYTES} bytes (base64), got {len(key)}; "
            "make one with `infership keygen encryption FILE`"
        )
    return key


def read_key_file(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise ConfigError(f"{path}: cannot read the encryption key: {reason}") from exc
    return parse_key(text, str(path))


@dataclass(frozen=True)
class KeyRing:
    """Keys by fingerprint, and where each came from (for messages)."""

    keys: Mapping[str, bytes] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    key_env: str | None = None

    @classmethod
    def gather(
        cls,
        *,
        key_files: Sequence[Path] = (),
        key_env: str | None = None,
        key_dir: Path | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> KeyRing:
        """Read every configured key. Raises ConfigError naming the file or variable at fault.

        In ``key_dir`` every entry whose name does not start with a dot is a key: a mounted
        Kubernetes Secret keeps its bookkeeping in ``..data`` links, one file per key beside.
        """
        found = [(read_key_file(path), str(path)) for path in key_files]
        if key_env and environ.get(key_env):
            found.append((parse_key(environ[key_env], f"${key_env}"), f"${key_env}"))
        if key_dir is not None:
            if not key_dir.is_dir():
                raise ConfigError(f"{key_dir}: the encryption key folder does not exist")
            for path in sorted(key_dir.iterdir()):
                if not path.name.startswith(".") and path.is_file():
                    found.append((read_key_file(path), str(path)))
        keys = {key_id(key): key for key, _ in found}
        sources = {key_id(key): source for key, source in found}
        return cls(keys, sources, key_env)

    def get(self, fingerprint: str) -> bytes | None:
        return self.keys.get(fingerprint)

    def describe(self) -> str:
        """``id (source), ...`` for error messages, or how to configure a key when empty."""
        if not self.keys:
            variable = f"${self.key_env}" if self.key_env else "an environment variable"
            return f"none configured: give a key file, a key folder or the key in {variable}"

        return ", ".join(f"{k} ({self.sources[k]})" for k in sorted(self.keys))
