"""The gRPC listener: a ``grpc.aio`` server with the inference and health services.

``server.Server`` starts it beside REST once REST is bound, and stops it on the same signal.
"""

from __future__ import annotations

import logging

import grpc

from infership.auth.policy import AccessPolicy
from infership.dataplane import DataPlane
from infership.errors import ConfigError
from infership.protocols.grpc._pb import add_health, add_servicer
from infership.protocols.grpc.decoding import guarded
from infership.protocols.grpc.health import HealthServicer
from infership.protocols.grpc.servicer import InferenceServicer
from infership.settings import ServerSettings, TlsSettings

log = logging.getLogger(__name__)


class GrpcServer:
    """``await start()`` binds and serves (returns the port), ``await stop()`` drains.

    >>> server = GrpcServer(plane, ServerSettings(grpc={"port": 0}))  # doctest: +SKIP
    >>> port = await server.start()  # doctest: +SKIP
    """

    def __init__(
        self, dataplane: DataPlane, settings: ServerSettings, policy: AccessPolicy | None = None
    ) -> None:
        self.dataplane = dataplane
        self.settings = settings
        self.policy = policy or AccessPolicy(settings.auth)
        self.health = HealthServicer(dataplane)
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    @property
    def host(self) -> str:
        return self.settings.grpc_host

    async def start(self) -> int:
        """Bind ``grpc.host:grpc.port`` and start serving. Raises ConfigError if it cannot bind."""
        limit = self.settings.grpc.max_message_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # Let clients ping as Triton's do (keepalive timeout 20 s) without GOAWAY.
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        # Registered through guarded(): a request that does not decode is INVALID_ARGUMENT.
        registrar = guarded(server)
        servicer = InferenceServicer(self.dataplane, self.policy, stream_bytes=limit)
        add_servicer(servicer, registrar)
        add_health(self.health, registrar)
        host = f"[{self.host}]" if ":" in self.host else self.host
        address = f"{host}:{self.settings.grpc.port}"
        try:
            credentials = _credentials(self.settings.tls)
            if credentials is None:
                self.port = server.add_insecure_port(address)
            else:
                self.port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise ConfigError(
                f"cannot bind gRPC to {address} ({exc}); is the port in use? Set --grpc-port,"
                " or --no-grpc to serve REST only"
            ) from None
        await server.start()
        await self.health.refresh()
        self.health.start()
        self._server = server
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, let calls in progress finish for up to ``grace_s`` (default
        ``shutdown.timeout_s``), then cancel the rest. Calling again with 0 forces it."""
        if self._server is None:
            return
        await self.health.shutdown()
        grace = self.settings.shutdown.timeout_s if grace_s is None else grace_s
        await self._server.stop(grace)


def _credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """Server credentials from the same files as REST's TLS; None when TLS is off."""
    if tls.cert_file is None or tls.key_file is None:
        return None
    try:
        pair = (tls.key_file.read_bytes(), tls.cert_file.read_bytes())
        client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    except OSError as exc:
        raise ConfigError(f"{exc.filename}: cannot read TLS file: {exc.strerror}") from None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
