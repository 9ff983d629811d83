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
        self._stopping = False
        self._models: set[str] = set()

    def statuses(self) -> dict[str, int]:
        """Each service's status now: ``""`` and ours for the server, then one per model."""
        plane = self.dataplane
        overall = SERVING if plane.ready and not self._stopping else NOT_SERVING
        statuses: dict[str, int] = {health.OVERALL_HEALTH: overall, SERVICE: overall}
        # A model unloaded since it was reported stays known, NOT_SERVING: grpcio's servicer
        # would otherwise keep answering its last status, SERVING, forever.
        statuses.update(dict.fromkeys(self._models, NOT_SERVING))
        self._models.update(plane.registry.names())
        for name in plane.registry.names():
            ready = not self._stopping and _model_ready(plane, name)
            statuses[name] = SERVING if ready else NOT_SERVING
        return statuses

    async def refresh(self) -> None:
        for service, status in self.statuses().items():
            await self.set(service, status)

    async def Check(  # noqa: N802 - the rpc's name
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)

    async def List(  # noqa: N802 - the rpc's name
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        """Every service's status. grpcio's aio servicer lacks this rpc (its sync base class
        would answer UNIMPLEMENTED with a Python repr), and the stubs lack its messages."""
        statuses = {
            service: health_pb2.HealthCheckResponse(status=status)
            for service, status in self.statuses().items()
        }
        return health_pb2.HealthListResponse(statuses=statuses)  # type: ignore[attr-defined]

    def start(self) -> None:
        """Refresh every ``interval_s`` until ``shutdown()``, for clients that Watch."""
        self._timer = asyncio.create_task(self._refresh_forever())

    async def shutdown(self) -> None:
        """Report NOT_SERVING for everything from now on, and stop refreshing."""
        self._stopping = True
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
