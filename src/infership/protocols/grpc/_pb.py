"""The one import of the generated code: messages typed through protoc's ``.pyi``, and the
registration functions grpcio-tools writes (untyped, so given their types here)."""

from __future__ import annotations

from collections.abc import Callable

from infership.protocols.grpc.decoding import Registrar
from infership.protocols.grpc.generated import grpc_service_pb2 as pb
from infership.protocols.grpc.generated import grpc_service_pb2_grpc as _stubs
from infership.protocols.grpc.generated import health_pb2 as health_pb
from infership.protocols.grpc.generated import health_pb2_grpc as _health_stubs

SERVICE = "inference.GRPCInferenceService"
"""Full name of the service, as in every method path (``/inference.GRPCInferenceService/...``)."""

add_servicer: Callable[[object, Registrar], None] = (
    _stubs.add_GRPCInferenceServiceServicer_to_server
)
"""Register an object with one coroutine method per rpc (``ModelInfer``, ...) on a server
(through :func:`~infership.protocols.grpc.decoding.guarded`)."""

add_health: Callable[[object, Registrar], None] = _health_stubs.add_HealthServicer_to_server
"""Register an object with ``Check``, ``List`` and ``Watch`` as ``grpc.health.v1.Health``."""

__all__ = ["SERVICE", "add_health", "add_servicer", "health_pb", "pb"]
