"""``infership keys``: make API keys and the hashed entries the server's keys file holds."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta

import click
import yaml

from infership.auth import Scope, digest, new_key

_DURATION = re.compile(r"^(\d+)([hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def _parse_duration(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> timedelta | None:
    if value is None:
        return None
    match = _DURATION.match(value)
    if match is None:
        raise click.BadParameter(f"{value!r}: use a number and h, d or w, e.g. 90d")
    return int(match[1]) * _UNITS[match[2]]


@click.group()
def keys() -> None:
    """Make API keys for a server started with --keys-file (or INFERSHIP_AUTH__KEYS_FILE)."""


@keys.command()
@click.option("--name", required=True, help="Who holds the key; shown in logs instead of it.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice([s.value for s in Scope]),
    default=[Scope.INFER.value],
    show_default=True,
    help="What the key may do (repeatable); admin implies every scope.",
)
@click.option("--expires-in", callback=_parse_duration, help="Lifetime, e.g. 12h, 90d, 4w.")
def new(name: str, scopes: tuple[str, ...], expires_in: timedelta | None) -> None:
    """Print a new key once, and the entry to append to the keys file (which holds only its
    SHA-256, so the file is not a secret worth stealing)."""
    key = new_key()
    entry: dict[str, object] = {"name": name, "sha256": digest(key), "scopes": list(scopes)}
    if expires_in is not None:
        expiry = datetime.now(UTC).replace(microsecond=0) + expires_in
        entry["expires"] = expiry.isoformat().replace("+00:00", "Z")
    click.echo(f"key (shown once; give it to {name}):\n  {key}\n", err=True)
    click.echo("# append under 'keys:' in the keys file")
    click.echo(yaml.safe_dump([entry], sort_keys=False).rstrip())


@keys.command("hash")
def hash_() -> None:
    """Read a key on stdin and print its SHA-256, for a keys file entry."""
    key = sys.stdin.readline().strip()
    if not key:
        raise click.UsageError("no key on stdin")
    click.echo(digest(key))
