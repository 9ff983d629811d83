"""``infership serve``: validate settings, then run the server until a signal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from infership.cli.common import configure_logging, fail, run
from infership.errors import ConfigError, InfershipError, ModelNotFound


@click.command()
@click.argument("model_repository", required=False, type=click.Path(path_type=Path))
@click.option("--host", help="Address to bind [default: 127.0.0.1].")
@click.option("--port", type=int, help="HTTP port [default: 8000].")
@click.option("--model", "models", multiple=True, help="Serve only this model (repeatable).")
@click.option("--model-control", is_flag=True, default=None, help="Enable the load/unload API.")
@click.option("--max-body-bytes", type=int, help="Largest request body accepted.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
def serve(model_repository: Path | None, **options: Any) -> None:
    """Serve MODEL_REPOSITORY (default: the bundled EfficientNet-Lite0 example).

    Every option can also be set as an environment variable: INFERSHIP_HTTP__PORT=9000,
    INFERSHIP_MODEL_CONTROL=true, ...
    """
    from infership.server import Server
    from infership.settings import ServerSettings

    http = {k: options.pop(k) for k in ("host", "port", "max_body_bytes") if options[k] is not None}
    given: dict[str, Any] = {k: v for k, v in options.items() if v not in (None, ())}
    if model_repository is not None:
        given["model_repository"] = model_repository
    if http:
        given["http"] = http
    try:
        settings = ServerSettings(**given)
    except ValidationError as exc:
        fail(f"invalid settings: {exc}", 2)
    configure_logging(settings.log_level)
    try:
        run(Server(settings).serve())
    except (ConfigError, ModelNotFound) as exc:  # both mean: fix the configuration
        fail(str(exc), 2)
    except InfershipError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        pass
