"""Server settings: typed, nested by concern, frozen once read.

Read once at the edge (the CLI or ``Server(...)``) from arguments and ``INFERSHIP_*`` environment
variables (nested fields use ``__``: ``INFERSHIP_HTTP__PORT=9000``), then passed down explicitly.
Per-model settings live in each model's ``model.yaml`` (see ``repository/manifest.py``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    """Address to bind. Loopback by default: exposing the server is a deliberate choice."""

    port: int = Field(8000, ge=0, le=65535)
    """TCP port for REST (0 picks a free port)."""

    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Largest request body accepted, after decompression. Larger bodies get 413."""

    max_concurrency: int = Field(256, ge=1)
    """Open connections and tasks beyond which new requests get 503 at once (bounds memory)."""

    keep_alive_s: float = Field(5.0, gt=0)
    """Idle keep-alive timeout for HTTP/1.1 connections."""


class LimitSettings(_Section):
    max_image_pixels: int = Field(40_000_000, ge=1)
    """Images with more pixels than this are refused before decoding (decompression bombs)."""

    max_images_per_request: int = Field(64, ge=1)
    """Most images one request may carry (a BYTES tensor or a multipart upload)."""


class ServerSettings(BaseSettings):
    """Everything ``infership serve`` needs besides the models themselves."""

    model_config = SettingsConfigDict(
        env_prefix="INFERSHIP_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    model_repository: Path | None = None
    """Folder of models. None serves the bundled example."""

    models: tuple[str, ...] = ()
    """Serve only these models of the repository (all when empty)."""

    http: HttpSettings = HttpSettings()
    limits: LimitSettings = LimitSettings()

    model_control: bool = False
    """Allow the repository load/unload API. Off by default: it changes what the server runs."""

    preprocess_threads: int = Field(0, ge=0)
    """Threads decoding and preprocessing images; 0 means one per CPU core."""

    log_level: str = "info"
