"""The composition root: repository, registry, data plane and transports, built from settings."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.applications import Starlette

from infership.auth.policy import AccessPolicy
from infership.dataplane import DataPlane
from infership.errors import ConfigError
from infership.loader import ModelLoader
from infership.metrics import Metrics
from infership.protocols.grpc.server import GrpcServer
from infership.protocols.rest.app import create_rest_app
from infership.registry import ModelRegistry
from infership.repository import FilesystemRepository
from infership.settings import ServerSettings

log = logging.getLogger(__name__)

EXAMPLE_REPOSITORY = Path(__file__).parent / "examples" / "models"
"""The bundled example: EfficientNet-Lite0, an ImageNet classifier."""


class Application:
    """Everything one server runs, wired together: ``check()``, ``start()``, then ``stop()``."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.repository = FilesystemRepository(settings.model_repository or EXAMPLE_REPOSITORY)
        self.metrics = Metrics()
        threads = settings.preprocess_threads or os.cpu_count() or 1
        self.preprocess_executor = ThreadPoolExecutor(threads, thread_name_prefix="preprocess")
        # One thread: every thread that parses large JSON bodies keeps a malloc arena of its
        # own, and asyncio's default pool grew to six (docs/benchmarking.md, large JSON).
        self.decode_executor = ThreadPoolExecutor(1, thread_name_prefix="decode")
        loader = ModelLoader(self.repository, settings, self.metrics, self.preprocess_executor)
        self.registry = ModelRegistry(loader, settings)
        self.dataplane = DataPlane(self.registry, model_control=settings.model_control)
        self.policy = AccessPolicy(settings.auth)
        self.rest: Starlette = create_rest_app(
            self.dataplane, settings, self.metrics, self.policy, self.decode_executor
        )
        self.grpc = (
            GrpcServer(self.dataplane, settings, self.policy) if settings.grpc.enabled else None
        )

    def check(self) -> list[str]:
        """Validate every configured model's config and files without loading it. Digests are
        checked once, when each model loads (hashing is the slow part of start-up).

        Raises ConfigError (naming the file and the field) or ModelNotFound; returns the names.
        """
        self._check_exposure()
        names = self.registry.names()
        if not names:
            raise ConfigError(
                f"model repository {self.repository.root} holds no models (no */model.yaml)"
            )
        for name in names:
            self.repository.find(name)
        return names

    def _check_exposure(self) -> None:
        """Refuse to put an unauthenticated server on a network unless told to, and never
        expose the repository API without keys: it changes what the server runs."""
        if self.policy.enabled:
            return
        exposed = self.settings.exposed_hosts
        if not exposed:
            return
        if self.settings.model_control:
            raise ConfigError(
                f"--model-control on {', '.join(exposed)} needs API keys (--api-keys or "
                "INFERSHIP_AUTH__ADMIN_TOKENS): the repository API must never be open to a network"
            )
        if not self.settings.auth.allow_unauthenticated:
            raise ConfigError(
                f"binding {', '.join(exposed)} without API keys would let anyone on the network "
                "use this server: configure keys (--api-keys), or pass --allow-unauthenticated "
                "(INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED=true) if the network itself is the boundary"
            )
        log.warning(
            "serving %s without authentication (--allow-unauthenticated)", ", ".join(exposed)
        )

    async def start(self) -> None:
        """Load and warm every model; readiness turns true when all are in."""
        for name in self.registry.names():
            await self.registry.load(name)

    async def stop(self) -> None:
        """Stop taking requests, let queued ones finish, release the models."""
        self.dataplane.draining = True
        await self.registry.stop()
        self.preprocess_executor.shutdown(wait=True)
        self.decode_executor.shutdown(wait=True)
