"""``grpc.health.v1.Health``, reflecting the data plane: the server as a whole (service ``""``
and ``inference.GRPCInferenceService``) is SERVING when ready, each model name when it can serve.

grpcio-health-checking's servicer holds statuses that must be pushed; ``Check`` refreshes them
first so a probe never sees a stale answer, and a timer refreshes them for ``Watch`` streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from infership.dataplane import DataPlane
from infership.errors import ClientError
from infership.protocols.grpc._pb import SERVICE

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthServicer(health.aio.HealthServicer):
    """Health statuses computed from ``dataplane``; ``refresh()`` brings them up to date."""

    def __init__(self, dataplane: DataPlane, *, interval_s: float = 1.0) -> None:
        super().__init__()
        self.dataplane = dataplane
        self.interval_s = interval_s
        self._timer: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        plane = self.dataplane
        overall = SERVING if plane.ready else NOT_SERVING
        await self.set(health.OVERALL_HEALTH, overall)
        await self.set(SERVICE, overall)
        for name in plane.registry.names():
            await self.set(name, SERVING if _model_ready(plane, name) else NOT_SERVING)

    async def Check(  # noqa: N802 - the rpc's name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)

    def start(self) -> None:
        """Refresh every ``interval_s`` until ``shutdown()``, for clients that Watch."""
        self._timer = asyncio.create_task(self._refresh_forever())

    async def shutdown(self) -> None:
        """Report NOT_SERVING for everything from now on, and stop refreshing."""
        await self.enter_graceful_shutdown()
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer

    async def _refresh_forever(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval_s)


def _model_ready(plane: DataPlane, name: str) -> bool:
    try:
        return plane.model_ready(name)
    except ClientError:
        return False
