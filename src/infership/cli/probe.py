"""``infership probe``: exit 0 when the local server is ready (the image's HEALTHCHECK).

Kept to the standard library and one request, so a probe every few seconds stays cheap.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import click


@click.command()
@click.option("--port", type=int, default=8000, envvar="INFERSHIP_HTTP__PORT", show_default=True)
@click.option("--path", default="/v2/health/ready", show_default=True)
@click.option("--timeout", type=float, default=2.0, show_default=True, help="Seconds.")
def probe(port: int, path: str, timeout: float) -> None:
    """Ask http://127.0.0.1:PORT/PATH; exit 0 on 200, 1 otherwise (with the reason)."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        click.echo(f"probe: {url}: {getattr(exc, 'reason', exc)}", err=True)
        sys.exit(1)
    if status != 200:
        click.echo(f"probe: {url}: HTTP {status}", err=True)
        sys.exit(1)
