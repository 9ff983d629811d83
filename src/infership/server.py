"""Running the application on sockets: start-up checks → bind → load and warm → serve → drain.

The drain is what makes rolling updates lossless: on SIGTERM readiness turns false at once
while both listeners keep answering for ``shutdown.delay_s`` (Kubernetes removes the pod from
its endpoints in the meantime, and REST answers ``Connection: close`` so clients move their
kept-alive connections elsewhere); then the listeners close, admitted and queued requests
finish, and the models are released. A second signal, or ``shutdown.timeout_s``, cuts it short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Iterator

import uvicorn

from infership.app import Application
from infership.protocols.rest.connection import GuardedHttpProtocol
from infership.settings import ServerSettings

log = logging.getLogger(__name__)


class _Uvicorn(uvicorn.Server):
    # uvicorn re-raises a captured SIGTERM once its own shutdown is done, which would kill the
    # process before the models drain. Server owns the signals instead (see _handle_signals).
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Server:
    """``infership serve`` as a library call: ``asyncio.run(Server(settings).serve())``."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.application = Application(settings)
        self._uvicorn: uvicorn.Server | None = None
        self._grpc_stopping: asyncio.Task[None] | None = None
        self._draining: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        """Serve until SIGINT/SIGTERM. Raises ConfigError or ModelLoadError if start-up fails."""
        started = time.perf_counter()
        # 1. Validate every model before binding: a broken config must not look like a server.
        names = self.application.check()
        # 2. Bind, so liveness answers while models load (readiness stays false until warm).
        http = self.settings.http
        tls = self.settings.tls
        config = uvicorn.Config(
            self.application.rest,
            host=http.host,
            port=http.port,
            http=GuardedHttpProtocol.configured(
                header_timeout_s=http.header_timeout_s,
                body_timeout_s=http.body_timeout_s,
                max_header_bytes=http.max_header_bytes,
                max_per_client=http.max_connections_per_client,
                min_send_rate=http.response_min_rate,
                send_window_s=http.response_window_s,
            ),
            ws="none",  # no WebSocket route: an upgrade is a plain request (a JSON 404)
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_keep_alive=int(http.keep_alive_s),
            timeout_graceful_shutdown=int(self.settings.shutdown.timeout_s),
            limit_concurrency=http.max_concurrency,
            server_header=False,
            ssl_certfile=tls.cert_file,
            ssl_keyfile=tls.key_file,
            ssl_ca_certs=tls.client_ca_file,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls.client_ca_file else ssl.CERT_NONE,
        )
        server = _Uvicorn(config)
        self._uvicorn = server
        self._handle_signals()
        serving = asyncio.create_task(server.serve())
        # uvicorn exposes only a flag for "listening"; poll it briefly.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if serving.done():
            serving.result()  # re-raise why binding failed
            raise SystemExit(1)  # uvicorn exited without an exception (e.g. port in use)
        grpc = self.application.grpc
        if grpc is not None:
            try:
                await grpc.start()
            except BaseException:
                server.should_exit = True
                await serving
                raise
        # 3. Load and warm the models. A failure stops the server with the reason; a signal
        #    during loading abandons the load instead of finishing it.
        loading = asyncio.create_task(self.application.start())
        await asyncio.wait({loading, serving}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await self._stop_grpc()
            await self.application.stop()
            return
        if loading.exception() is not None:
            server.should_exit = True
            await serving
            await self._stop_grpc()
            await self.application.stop()
            loading.result()  # re-raise the load failure
        scheme = "https" if tls.enabled else "http"
        grpc_address = f" and grpc://{grpc.host}:{grpc.port}" if grpc is not None else ""
        log.info(
            "ready: serving %s on %s://%s:%d%s (cold start %.2f s)",
            ", ".join(names), scheme, http.host, self.port, grpc_address,
            time.perf_counter() - started,
        )  # fmt: skip
        # 4. Serve until a signal and the drain delay that follows it (see request_stop); then
        #    uvicorn closes the listener and finishes open requests, and gRPC its calls.
        await serving
        await self._stop_grpc()
        # 5. Finish what is still queued and release the models.
        await self.application.stop()
        if self.application.metrics.drain_started is not None:
            drained = time.monotonic() - self.application.metrics.drain_started
            log.info("drained and stopped in %.2f s", drained)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._uvicorn is not None, "not serving"
        port: int = self._uvicorn.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def grpc_port(self) -> int | None:
        """The bound gRPC port; None when gRPC is off or not bound yet."""
        grpc = self.application.grpc
        return grpc.port if grpc is not None else None

    def request_stop(self) -> None:
        """Begin a graceful stop; a second call forces it. Call from the event loop's thread."""
        if self._uvicorn is None:
            return
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain())
            return
        log.warning("second signal: stopping now, cutting off requests in progress")
        self._draining.cancel()
        self._uvicorn.force_exit = True
        self._close_listeners(force=True)

    async def _drain(self) -> None:
        plane = self.application.dataplane
        # Nothing routes to a server that was never ready: then there is nothing to wait for.
        delay = self._drain_delay_s() if plane.ready else 0.0
        plane.draining = True  # readiness false on REST, gRPC and grpc.health at once
        self.application.metrics.start_drain()
        if delay > 0:
            log.info("draining: not ready; still serving for %.1f s while routes update", delay)
            await asyncio.sleep(delay)
        self._close_listeners(force=False)

    def _close_listeners(self, *, force: bool) -> None:
        assert self._uvicorn is not None
        self._uvicorn.should_exit = True
        grpc = self.application.grpc
        if grpc is not None and grpc.port is not None and (force or self._grpc_stopping is None):
            # REST and gRPC close together; a forced stop cancels the gRPC calls in progress.
            self._grpc_stopping = asyncio.get_running_loop().create_task(
                grpc.stop(0 if force else None)
            )

    def _drain_delay_s(self) -> float:
        configured = self.settings.shutdown.delay_s
        if configured is not None:
            return configured
        return 5.0 if self.settings.exposed_hosts else 0.0

    async def _stop_grpc(self) -> None:
        grpc = self.application.grpc
        if grpc is None:
            return
        if self._grpc_stopping is None:
            self._grpc_stopping = asyncio.create_task(grpc.stop())
        await self._grpc_stopping

    def _handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Not available off the main thread or on Windows: then the embedder stops us.
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop)
