"""``infership verify``: check model version folders against their signatures, offline."""

from __future__ import annotations

from pathlib import Path

import click

from infership.cli.common import fail

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--public-key", type=_FILE, help="PEM public key the signatures must verify with.")
@click.option("--certificate-chain", multiple=True, type=_FILE, help="CA certificate (repeatable).")
def verify(
    folders: tuple[Path, ...], public_key: Path | None, certificate_chain: tuple[Path, ...]
) -> None:
    """Verify each version folder in FOLDERS (a model folder: each of its versions).

    Exits 1 at the first folder that is unsigned or differs from its signature, naming the file.
    """
    from infership.errors import ConfigError, SignatureInvalid
    from infership.security.signing import TrustRoots, verify_folder, version_folders

    if (public_key is None) == (not certificate_chain):
        fail("give --public-key or --certificate-chain (one of them)", 2)
    trust = TrustRoots(public_key, certificate_chain)
    for folder in (v for f in folders for v in version_folders(f)):
        try:
            verify_folder(folder, trust, str(folder))
        except SignatureInvalid as exc:
            fail(str(exc), 1)
        except ConfigError as exc:
            fail(str(exc), 2)
        click.echo(f"verified {folder} with {trust.describe()}")
