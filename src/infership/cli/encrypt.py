"""``infership encrypt``: write an encrypted copy of a model version folder."""

from __future__ import annotations

from pathlib import Path

import click

from infership.cli.common import fail

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="New version folder."
)
@click.option("--key-file", required=True, type=_FILE, help="Key to encrypt with.")
@click.option(
    "--decrypt-key-file",
    multiple=True,
    type=_FILE,
    help="Key SOURCE is encrypted with, to re-encrypt under --key-file (repeatable).",
)
def encrypt(source: Path, output: Path, key_file: Path, decrypt_key_file: tuple[Path, ...]) -> None:
    """Encrypt every file of the version folder SOURCE into the new folder OUTPUT.

    Files keep their names and are ordinary files, so they can be copied and baked into an
    image without the key. The server decrypts them in memory at load. Sign OUTPUT afterwards.

    \b
    infership encrypt models/resnet/1 -o models/resnet/2 --key-file model.key
    """
    from infership.errors import ConfigError
    from infership.security.encryption import encrypt_folder
    from infership.security.keys import KeyRing, key_id, read_key_file

    try:
        key = read_key_file(key_file)
        old = KeyRing.gather(key_files=decrypt_key_file)
        written = encrypt_folder(source, output, key, old)
    except ValueError as exc:
        fail(str(exc), 2)
    except ConfigError as exc:
        fail(str(exc), 2)
    for path in written:
        click.echo(f"encrypted {path}")
    click.echo(f"{len(written)} file(s) encrypted with key {key_id(key)}; sign {output} next")
