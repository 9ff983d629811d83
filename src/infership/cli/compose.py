"""``infership compose``: write a Compose file that runs an image from ``infership build``."""

from __future__ import annotations

from pathlib import Path

import click

from infership.cli.common import fail
from infership.errors import ConfigError


@click.command()
@click.argument("image")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("compose.yaml"),
    show_default=True,
    help="File to write; - for standard output.",
)
@click.option("--service", default="infership", show_default=True, help="Service name.")
@click.option("--port", "host_port", type=int, default=8000, show_default=True,
              help="Port published on 127.0.0.1.")  # fmt: skip
@click.option("--cpus", type=float, default=2.0, show_default=True, help="CPU limit.")
@click.option("--memory", default="1g", show_default=True, help="Memory limit.")
def compose(
    image: str, output: Path, service: str, host_port: int, cpus: float, memory: str
) -> None:
    """Write a Compose file that runs IMAGE with a health check and resource limits."""
    from infership.image.compose import ComposeSpec, render_compose

    try:
        text = render_compose(ComposeSpec(image, service, host_port=host_port, cpus=cpus,
                                          memory=memory))  # fmt: skip
    except ConfigError as exc:
        fail(str(exc), 2)
    if str(output) == "-":
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}")
