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
@click.option("--grpc-port", type=int, help="gRPC port [default: 8001].")
@click.option("--no-grpc", is_flag=True, help="Serve REST only.")
@click.option("--model", "models", multiple=True, help="Serve only this model (repeatable).")
@click.option("--model-control", is_flag=True, default=None, help="Enable the load/unload API.")
@click.option("--max-body-bytes", type=int, help="Largest request body accepted.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--log-format", type=click.Choice(["text", "json"]), help="Log lines as text or JSON objects."
)
@click.option(
    "--key-file", type=click.Path(path_type=Path), help="Key for encrypted models (base64 file)."
)
@click.option(
    "--key-dir", type=click.Path(path_type=Path), help="Folder of keys, e.g. a mounted Secret."
)
@click.option(
    "--signing-policy",
    type=click.Choice(["off", "warn", "require"]),
    help="Least signature check for every model [default: off].",
)
@click.option(
    "--signing-public-key",
    type=click.Path(path_type=Path),
    help="PEM public key every model signature must verify with.",
)
def serve(model_repository: Path | None, **options: Any) -> None:
    """Serve MODEL_REPOSITORY (default: the bundled EfficientNet-Lite0 example).

    Every option can also be set as an environment variable: INFERSHIP_HTTP__PORT=9000,
    INFERSHIP_MODEL_CONTROL=true, ...
    """
    from infership.server import Server
    from infership.settings import ServerSettings

    http = {k: options.pop(k) for k in ("host", "port", "max_body_bytes") if options[k] is not None}
    grpc: dict[str, Any] = {"port": options.pop("grpc_port")}
    if grpc["port"] is None:
        del grpc["port"]
    if options.pop("no_grpc"):
        grpc["enabled"] = False
    given: dict[str, Any] = {k: v for k, v in options.items() if v not in (None, ())}
    if model_repository is not None:
        given["model_repository"] = model_repository
    if http:
        given["http"] = http
    if grpc:
        given["grpc"] = grpc
    if (log_format := given.pop("log_format", None)) is not None:
        given["observability"] = {"log_format": log_format}
    security_options = ("key_file", "key_dir", "signing_policy", "signing_public_key")
    if security := {k: given.pop(k) for k in security_options if k in given}:
        given["model_security"] = security
    try:
        settings = ServerSettings(**given)
    except ValidationError as exc:
        fail(f"invalid settings: {exc}", 2)
    configure_logging(settings.log_level, settings.observability.log_format)
    try:
        run(Server(settings).serve())
    except (ConfigError, ModelNotFound) as exc:  # both mean: fix the configuration
        fail(str(exc), 2)
    except InfershipError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        pass
