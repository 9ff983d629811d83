"""``infership keygen``: make a signing key pair or a model encryption key."""

from __future__ import annotations

import os
from pathlib import Path

import click

from infership.cli.common import fail


@click.group()
def keygen() -> None:
    """Make keys for signing (EC P-256 key pair) or encrypting (AES-256) models."""


@keygen.command()
@click.argument("prefix", type=click.Path(path_type=Path))
def signing(prefix: Path) -> None:
    """Write PREFIX.pem (private, mode 600: keep it off the servers) and PREFIX.pub."""
    from infership.security.signing import new_signing_key

    private_pem, public_pem = new_signing_key()
    private, public = prefix.with_name(prefix.name + ".pem"), prefix.with_name(prefix.name + ".pub")
    _write_secret(private, private_pem)
    public.write_bytes(public_pem)
    click.echo(f"wrote {private} (private) and {public} (public)")


@keygen.command()
@click.argument("path", type=click.Path(path_type=Path))
def encryption(path: Path) -> None:
    """Write a random AES-256 key to PATH (mode 600) as one base64 line."""
    from infership.security.keys import key_id, new_key, parse_key

    text = new_key()
    _write_secret(path, (text + "\n").encode("ascii"))
    click.echo(f"wrote {path} (key id {key_id(parse_key(text, str(path)))})")


def _write_secret(path: Path, data: bytes) -> None:
    # O_EXCL: never overwrite a key, which would orphan what it protected; 0o600 from birth.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{path} already exists; not overwriting a key", 2)
    except OSError as exc:
        fail(f"{path}: cannot write: {exc.strerror}", 2)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
