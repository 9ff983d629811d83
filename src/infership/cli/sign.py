"""``infership sign``: sign model version folders with an EC private key or a certificate."""

from __future__ import annotations

import os
from pathlib import Path

import click

from infership.cli.common import fail

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--private-key", required=True, type=_FILE, help="PEM EC private key.")
@click.option("--certificate", type=_FILE, help="PEM signing certificate for the key.")
@click.option(
    "--certificate-chain", multiple=True, type=_FILE, help="Intermediate CA (repeatable)."
)
@click.option(
    "--password-env", metavar="VAR", help="Environment variable holding the key's password."
)
def sign(
    folders: tuple[Path, ...],
    private_key: Path,
    certificate: Path | None,
    certificate_chain: tuple[Path, ...],
    password_env: str | None,
) -> None:
    """Sign each version folder in FOLDERS (a model folder: each of its versions).

    Writes FOLDER/model.sig covering every file of the folder. Sign after `infership encrypt`:
    the signature covers the files as they are on disk.
    """
    from infership.security.signing import sign_folder, version_folders

    password = None
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            fail(f"${password_env} is not set", 2)
    targets = [v for folder in folders for v in version_folders(folder)]
    if not targets:
        fail(f"no version folders in {', '.join(map(str, folders))}", 2)
    for folder in targets:
        try:
            signature = sign_folder(
                folder,
                private_key,
                certificate=certificate,
                certificate_chain=certificate_chain,
                password=password,
            )
        except ValueError as exc:
            fail(str(exc), 2)
        click.echo(f"signed {folder} -> {signature}")
