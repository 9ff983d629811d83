"""Model files encrypted at rest with AES-256-GCM, decrypted into memory at load.

An encrypted file is an ordinary file (an image can bake it without the key) laid out as::

    magic "ISHPENC\\0" (8) | format version (1) | key id (8) | nonce (12) | ciphertext + tag (16)

The nonce is random and new for every file. The associated data is the 29-byte header followed by
the file's path inside its version folder (``model.onnx``), so a file that is edited, truncated,
renamed or swapped for another encrypted file fails authentication instead of loading. The key id
is a fingerprint of the key, which lets the server pick the right key from several while a key is
being rotated.

Single-shot AEAD keeps the format small; it caps a file at 2 GiB, which is also protobuf's (and so
ONNX's) limit. A chunked format would be version 2.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infership.errors import DecryptionFailed
from infership.security.keys import KeyRing, key_id

MAGIC = b"ISHPENC\x00"
FORMAT_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16
HEADER_BYTES = len(MAGIC) + 1 + 8 + _NONCE_BYTES
MAX_PLAINTEXT_BYTES = 2**31 - 1 - _TAG_BYTES
"""The most ``cryptography``'s AES-GCM takes in one call."""


@dataclass(frozen=True, slots=True)
class Header:
    version: int
    key_id: str
    """Hex fingerprint of the key (16 digits)."""
    nonce: bytes
    raw: bytes


def is_encrypted(path: Path) -> bool:
    """True when ``path`` starts with the encrypted-file magic (reads 8 bytes)."""
    with path.open("rb") as stream:
        return stream.read(len(MAGIC)) == MAGIC


def encrypt(plaintext: bytes, key: bytes, name: str) -> bytes:
    """The encrypted form of ``plaintext``; ``name`` is its path inside the version folder."""
    if len(plaintext) > MAX_PLAINTEXT_BYTES:
        raise ValueError(f"{name}: {len(plaintext)} bytes is over the 2 GiB this format holds")
    header = MAGIC + bytes([FORMAT_VERSION]) + bytes.fromhex(key_id(key))
    header += secrets.token_bytes(_NONCE_BYTES)
    return header + AESGCM(key).encrypt(header[-_NONCE_BYTES:], plaintext, _aad(header, name))


def read_header(data: bytes, where: Path) -> Header:
    """Parse the header of an encrypted file's bytes. Raises DecryptionFailed naming ``where``."""
    if data[: len(MAGIC)] != MAGIC:
        raise DecryptionFailed(f"{where}: not an infership encrypted file (no header)")
    if len(data) < HEADER_BYTES + _TAG_BYTES:
        raise DecryptionFailed(
            f"{where}: truncated: {len(data)} bytes is shorter than an encrypted file's header "
            "and tag"
        )
    version = data[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise DecryptionFailed(
            f"{where}: encryption format version {version} is not supported (this server reads "
            f"version {FORMAT_VERSION}); upgrade infership or re-encrypt the model"
        )
    start = len(MAGIC) + 1
    return Header(
        version=version,
        key_id=data[start : start + 8].hex(),
        nonce=data[start + 8 : HEADER_BYTES],
        raw=data[:HEADER_BYTES],
    )


def decrypt(data: bytes, keys: KeyRing, name: str, where: Path) -> bytes:
    """The plaintext of an encrypted file's bytes, in memory only.

    ``name`` is the path inside the version folder the file was encrypted under; ``where`` is
    the path shown in errors. Raises DecryptionFailed: no key with the file's key id, or the
    file does not authenticate (modified, truncated, renamed).
    """
    header = read_header(data, where)
    key = keys.get(header.key_id)
    if key is None:
        raise DecryptionFailed(
            f"{where}: encrypted with key {header.key_id}, which is not among the configured "
            f"keys ({keys.describe()})"
        )
    try:
        return AESGCM(key).decrypt(header.nonce, data[HEADER_BYTES:], _aad(header.raw, name))
    except InvalidTag:
        raise DecryptionFailed(
            f"{where}: does not authenticate with key {header.key_id}: the file was modified, "
            "truncated or renamed after it was encrypted"
        ) from None


def encrypt_folder(
    source: Path, target: Path, key: bytes, old_keys: KeyRing | None = None
) -> list[Path]:
    """Write an encrypted copy of the version folder ``source`` into the new folder ``target``.

    Files already encrypted are decrypted first with ``old_keys`` (re-encryption under a new
    key, for rotation). A signature in ``source`` is not copied: sign the new folder. Returns
    the files written. Raises ValueError for a bad source or target, DecryptionFailed.
    """
    from infership.security.signing import SIGNATURE_NAME

    if not source.is_dir():
        raise ValueError(f"{source} is not a folder")
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"{target} already exists and is not empty")
    files = sorted(p for p in source.rglob("*") if not p.is_dir())
    for path in files:
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"{path}: only regular files can be encrypted (found a link)")
    if not files:
        raise ValueError(f"{source} holds no files to encrypt")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in files:
        name = path.relative_to(source).as_posix()
        if name == SIGNATURE_NAME:
            continue
        data = path.read_bytes()
        if data.startswith(MAGIC):
            data = decrypt(data, old_keys or KeyRing(), name, path)
        out = target / name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(encrypt(data, key, name))
        written.append(out)
    return written


def _aad(header: bytes, name: str) -> bytes:
    return header + name.encode("utf-8")
