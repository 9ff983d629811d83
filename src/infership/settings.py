"""Server settings: typed, nested by concern, frozen once read.

Read once at the edge (the CLI or ``Server(...)``) from arguments and ``INFERSHIP_*`` environment
variables (nested fields use ``__``: ``INFERSHIP_HTTP__PORT=9000``), then passed down explicitly.
Per-model settings live in each model's ``model.yaml`` (see ``repository/manifest.py``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
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

    body_memory_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024)
    """Bytes of large request bodies (64 KiB and up) read and decoded at once; the others wait,
    held back by TCP flow control. Bounds memory under many concurrent large JSON bodies."""

    body_min_rate: int = Field(64 * 1024, ge=1)
    """Bytes/s a large body (64 KiB and up) must arrive at while other bodies wait for
    ``body_memory_bytes``; a slower one is answered 408, so no client can hold that memory."""

    response_min_rate: int = Field(64 * 1024, ge=1)
    """Bytes/s a client must read a response at: one whose unsent bytes drain slower than
    this over ``response_window_s`` is disconnected (it would hold the response's memory and
    its connection slot for as long as it liked)."""

    response_window_s: float = Field(10.0, gt=0)
    """Seconds over which a response's drain rate is measured against ``response_min_rate``."""

    max_concurrency: int = Field(256, ge=1)
    """Open connections and tasks beyond which new requests get 503 at once (bounds memory).
    At the cap, idle kept-alive connections are closed first, longest idle first."""

    max_connections_per_client: int | None = Field(None, ge=1)
    """Connections one client address may hold (its idle ones are closed first; then 503).
    None: half of ``max_concurrency``, so that no single peer can take every slot."""

    keep_alive_s: float = Field(5.0, gt=0)
    """Idle keep-alive timeout for HTTP/1.1 connections."""

    header_timeout_s: float = Field(10.0, gt=0)
    """Time a connection has to send a request's headers (slowloris defence); else 408."""

    body_timeout_s: float = Field(60.0, gt=0)
    """Time a request has to send its body once the headers are in; else 408."""

    max_header_bytes: int = Field(32 * 1024, ge=1024)
    """Largest request line plus headers; larger gets 431."""


class LimitSettings(_Section):
    max_image_pixels: int = Field(40_000_000, ge=1)
    """Images with more pixels than this are refused before decoding (decompression bombs)."""

    max_image_side: int = Field(32_768, ge=1)
    """Images wider or taller than this are refused before decoding: per-row work and buffers
    grow with the side, so a 1 × 40,000,000 image would cost far more than its pixels."""

    max_image_decode_bytes: int = Field(40 * 1024 * 1024, ge=1024 * 1024)
    """Memory one image may need to decode, estimated from its header before decoding:
    Pillow's pixel buffer at the scale decoded (JPEGs: 1/2 to 1/8 in draft mode; at least
    2 bytes per pixel, 4 for colour and 16-bit) plus the decoder's own (progressive JPEG
    coefficients, WebP canvases, TIFF strips and tiles). Images that would need more are
    refused (413). Bounds memory and decode time per preprocess thread: 40 MiB admits a 4K
    (3840x2160) RGB PNG, a 1080p WebP and any baseline JPEG within ``max_image_pixels``."""

    max_images_per_request: int = Field(64, ge=1)
    """Most images one request may carry (a BYTES tensor or a multipart upload)."""


class ObservabilitySettings(_Section):
    log_format: Literal["text", "json"] = "text"
    """``json`` writes every log line, access log included, as one JSON object."""

    access_log: bool = True
    """One log line per HTTP request (logger ``infership.access``) with its request id."""

    tracing: bool = True
    """OpenTelemetry server spans when the ``otel`` extra is installed (no-op otherwise)."""

    web_page: bool = True
    """Serve the web page at ``/`` (try models, watch metrics). ``/`` answers JSON when off."""


class GrpcSettings(_Section):
    enabled: bool = True
    """Serve the Open Inference Protocol over gRPC beside REST."""

    host: str | None = None
    """Address to bind; None binds the same address as REST (``http.host``)."""

    port: int = Field(8001, ge=0, le=65535)
    """TCP port for gRPC (0 picks a free port)."""

    max_message_bytes: int = Field(64 * 1024 * 1024, ge=4 * 1024 * 1024)
    """Largest request or response message. grpcio's 4 MiB default holds only a handful of
    raw 224×224 images; 64 MiB holds a batch of 64 (38.5 MB as FP32), like REST's body limit."""


class ShutdownSettings(_Section):
    """What SIGTERM does: readiness off at once, keep serving for ``delay_s`` while load
    balancers take the server out, stop accepting, finish admitted work within ``timeout_s``."""

    delay_s: float | None = Field(None, ge=0)
    """Seconds to keep serving after readiness turns false. None: 0 on a loopback address
    (nothing routes to it), 5 otherwise (Kubernetes endpoints take a few seconds to update)."""

    timeout_s: float = Field(30.0, gt=0)
    """Longest wait for admitted requests to finish before they are cut off."""


class TlsSettings(_Section):
    """TLS for REST and gRPC alike. Off unless a certificate and key are given."""

    cert_file: Path | None = None
    """PEM certificate chain of the server."""

    key_file: Path | None = None
    """PEM private key of the server."""

    client_ca_file: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""

    @model_validator(mode="after")
    def _pairs(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file needs cert_file and key_file (TLS) as well")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class RateLimit(_Section):
    """A token bucket: ``burst`` requests at once, refilled at ``requests_per_second``."""

    requests_per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class AuthSettings(_Section):
    """API keys (see ``infership keys``). Authentication is on as soon as any key source is set."""

    keys_file: Path | None = None
    """YAML file of keys (hashed or from a mounted Secret); re-read when it changes."""

    tokens: tuple[SecretStr, ...] = ()
    """Plaintext keys with the ``infer`` scope, e.g. INFERSHIP_AUTH__TOKENS='["isk_..."]'."""

    admin_tokens: tuple[SecretStr, ...] = ()
    """Plaintext keys with every scope, the repository API included."""

    protect_health: bool = False
    """Require a key for the health endpoints. Off so that probes work without one."""

    protect_metrics: bool = False
    """Require a key (``metrics`` scope) for /metrics. Off so that scrapers work without one."""

    key_rate_limit: RateLimit | None = RateLimit(requests_per_second=1000, burst=2000)
    """Requests/s and burst per key, unless the key sets its own; None: unlimited."""

    anonymous_rate_limit: RateLimit | None = None
    """Requests/s and burst per client address when authentication is off; None: unlimited."""

    allow_unauthenticated: bool = False
    """Serve on a non-loopback address without any key. Refused unless set: an open inference
    server on a network is a deliberate choice, not a default."""


class ModelSecuritySettings(_Section):
    """Signed and encrypted models (see docs/model-security.md)."""

    signing_policy: Literal["off", "warn", "require"] = "off"
    """The least every model gets: off, warn (log problems) or require (an unsigned or tampered
    version never loads). A model's ``signing.policy`` may only make it stricter."""

    signing_public_key: Path | None = None
    """PEM public key every model's signatures must verify with. When set (or the chain is), it
    overrides the keys named in model.yaml: keep it outside the model repository."""

    signing_certificate_chain: tuple[Path, ...] = ()
    """CA certificates (PEM) certificate signatures must chain to, instead of a public key."""

    key_file: Path | None = None
    """File holding a model encryption key (one base64 line, ``infership keygen encryption``)."""

    key_dir: Path | None = None
    """Folder of key files, e.g. a Kubernetes Secret mounted read-only; every file is a key."""

    key_env: str = "INFERSHIP_MODEL_KEY"
    """Environment variable holding a key, read when set (empty string: never read one)."""


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
    grpc: GrpcSettings = GrpcSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    auth: AuthSettings = AuthSettings()
    tls: TlsSettings = TlsSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    model_security: ModelSecuritySettings = ModelSecuritySettings()

    model_control: bool = False
    """Allow the repository load/unload API. Off by default: it changes what the server runs."""

    preprocess_threads: int = Field(0, ge=0)
    """Threads decoding and preprocessing images; 0 means one per CPU core."""

    log_level: str = "info"

    @property
    def grpc_host(self) -> str:
        """The address gRPC binds: its own, or the REST one."""
        return self.grpc.host or self.http.host

    @property
    def exposed_hosts(self) -> list[str]:
        """The non-loopback addresses the server binds (REST, and gRPC when enabled)."""
        hosts = {self.http.host} | ({self.grpc_host} if self.grpc.enabled else set())
        return sorted(host for host in hosts if not is_loopback(host))


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (a name may resolve anywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
