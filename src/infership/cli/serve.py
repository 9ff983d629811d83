"""``infership serve``: validate settings, then run the server until a signal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from infership.cli.common import configure_logging, fail, run
from infership.errors import ConfigError, InfershipError, ModelLoadError, ModelNotFound


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
@click.option(
    "--api-keys",
    type=click.Path(path_type=Path),
    help="YAML file of API keys (see `infership keys`); turns authentication on.",
)
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    default=None,
    help="Allow a non-loopback --host without API keys.",
)
@click.option("--tls-cert", type=click.Path(path_type=Path), help="PEM certificate chain (TLS).")
@click.option("--tls-key", type=click.Path(path_type=Path), help="PEM private key (TLS).")
@click.option(
    "--tls-client-ca",
    type=click.Path(path_type=Path),
    help="PEM CA bundle: require client certificates it signed (mutual TLS).",
)
@click.option(
    "--drain-delay",
    type=float,
    help="Seconds to keep serving after SIGTERM turns readiness off [default: 0 on loopback, 5].",
)
def serve(model_repository: Path | None, **options: Any) -> None:
    """Serve MODEL_REPOSITORY (default: the bundled EfficientNet-Lite0 example).

    Every option can also be set as an environment variable: INFERSHIP_HTTP__PORT=9000,
    INFERSHIP_MODEL_CONTROL=true, ...
    """
    from infership.server import Server
    from infership.settings import ServerSettings

    if options.pop("no_grpc"):
        options["grpc_enabled"] = False
    given: dict[str, Any] = {}
    if model_repository is not None:
        given["model_repository"] = model_repository
    for option, value in options.items():
        if value is None or value == ():
            continue
        *sections, field = _SETTING.get(option, (option,))
        target = given
        for section in sections:
            target = target.setdefault(section, {})
        target[field] = value
    try:
        settings = ServerSettings(**given)
    except ValidationError as exc:
        fail(f"invalid settings: {exc}", 2)
    configure_logging(settings.log_level, settings.observability.log_format)
    try:
        run(Server(settings).serve())
    except (ConfigError, ModelNotFound, ModelLoadError) as exc:  # fix the configuration or model
        fail(str(exc), 2)
    except InfershipError as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        pass


_SETTING: dict[str, tuple[str, ...]] = {
    # option name -> where it lives in ServerSettings (options not listed are top-level fields)
    "host": ("http", "host"),
    "port": ("http", "port"),
    "max_body_bytes": ("http", "max_body_bytes"),
    "grpc_port": ("grpc", "port"),
    "grpc_enabled": ("grpc", "enabled"),
    "log_format": ("observability", "log_format"),
    "key_file": ("model_security", "key_file"),
    "key_dir": ("model_security", "key_dir"),
    "signing_policy": ("model_security", "signing_policy"),
    "signing_public_key": ("model_security", "signing_public_key"),
    "api_keys": ("auth", "keys_file"),
    "allow_unauthenticated": ("auth", "allow_unauthenticated"),
    "tls_cert": ("tls", "cert_file"),
    "tls_key": ("tls", "key_file"),
    "tls_client_ca": ("tls", "client_ca_file"),
    "drain_delay": ("shutdown", "delay_s"),
}
