"""``grpc.health.v1.Health``, reflecting the data plane: the server as a whole (service ``""``
and ``inference.GRPCInferenceService``) is SERVING when ready, each model name when it can serve.

Our own servicer over our own stubs (``proto/health.proto``): grpcio-health-checking's stubs
refuse protobuf runtimes older than the one they were generated with. Statuses are computed from
the data plane: ``Check`` and ``List`` compute them on each call, so a probe never sees a stale
answer, and a timer recomputes them every ``interval_s`` for ``Watch`` streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc

from infership.dataplane import DataPlane
from infership.errors import ClientError
from infership.protocols.grpc._pb import SERVICE, health_pb
from infership.protocols.grpc.errors import details_for

Context = grpc.aio.ServicerContext[Any, Any]
Status = health_pb.HealthCheckResponse.ServingStatus

OVERALL: Final = ""
"""The service name that stands for the server as a whole."""
SERVING: Final = health_pb.HealthCheckResponse.SERVING
NOT_SERVING: Final = health_pb.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: Final = health_pb.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer:
    """Health statuses computed from ``dataplane``; ``refresh()`` brings them up to date.

    Registered with ``_pb.add_health(HealthServicer(plane), guarded(server))``.
    """

    def __init__(self, dataplane: DataPlane, *, interval_s: float = 1.0) -> None:
        self.dataplane = dataplane
        self.interval_s = interval_s
        self._timer: asyncio.Task[None] | None = None
        self._stopping = False
        self._models: set[str] = set()
        self._status: dict[str, Status] = {}
        self._version = 0  # counts changes of _status; Watch streams wait for the next one
        self._changed = asyncio.Condition()

    def statuses(self) -> dict[str, Status]:
        """Each service's status now: ``""`` and ours for the server, then one per model."""
        plane = self.dataplane
        overall = SERVING if plane.ready and not self._stopping else NOT_SERVING
        statuses: dict[str, Status] = {OVERALL: overall, SERVICE: overall}
        # A model unloaded since it was reported stays known, NOT_SERVING, rather than unknown:
        # a probe of it then says why it fails.
        statuses.update(dict.fromkeys(self._models, NOT_SERVING))
        names = plane.registry.names()
        self._models.update(names)
        for name in names:
            ready = not self._stopping and _model_ready(plane, name)
            statuses[name] = SERVING if ready else NOT_SERVING
        return statuses

    async def refresh(self) -> dict[str, Status]:
        """Recompute the statuses, wake the Watch streams if any changed; return them."""
        statuses = self.statuses()
        if statuses != self._status:
            self._status = statuses
            self._version += 1
            async with self._changed:
                self._changed.notify_all()
        return statuses

    async def Check(  # noqa: N802 - the rpc's name
        self, request: health_pb.HealthCheckRequest, context: Context
    ) -> health_pb.HealthCheckResponse:
        status = (await self.refresh()).get(request.service)
        if status is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, details_for(f"unknown service {request.service!r}")
            )
        return health_pb.HealthCheckResponse(status=status)

    async def List(  # noqa: N802 - the rpc's name
        self, request: health_pb.HealthListRequest, context: Context
    ) -> health_pb.HealthListResponse:
        """Every service's status."""
        statuses = await self.refresh()
        return health_pb.HealthListResponse(
            statuses={
                service: health_pb.HealthCheckResponse(status=status)
                for service, status in statuses.items()
            }
        )

    async def Watch(  # noqa: N802 - the rpc's name
        self, request: health_pb.HealthCheckRequest, context: Context
    ) -> AsyncIterator[health_pb.HealthCheckResponse]:
        """The service's status now, then each time it changes; SERVICE_UNKNOWN while the
        service is not known. Streams share one condition: nothing is kept per name asked."""
        service = request.service
        last: Status | None = None
        while True:
            seen = self._version
            status = self._status.get(service, SERVICE_UNKNOWN)
            if status != last:
                last = status
                yield health_pb.HealthCheckResponse(status=status)
            async with self._changed:
                while self._version == seen:
                    await self._changed.wait()

    def start(self) -> None:
        """Refresh every ``interval_s`` until ``shutdown()``, for clients that Watch."""
        self._timer = asyncio.create_task(self._refresh_forever())

    async def shutdown(self) -> None:
        """Report NOT_SERVING for everything from now on, and stop refreshing."""
        self._stopping = True
        await self.refresh()
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
