"""The one import of the generated code: messages typed through protoc's ``.pyi``, and the
registration function grpcio-tools writes (untyped, so given its type here)."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from infership.protocols.grpc.generated import grpc_service_pb2 as pb
from infership.protocols.grpc.generated import grpc_service_pb2_grpc as _stubs

SERVICE = "inference.GRPCInferenceService"
"""Full name of the service, as in every method path (``/inference.GRPCInferenceService/...``)."""

add_servicer: Callable[[object, grpc.aio.Server], None] = (
    _stubs.add_GRPCInferenceServiceServicer_to_server
)
"""Register an object with one coroutine method per rpc (``ModelInfer``, ...) on a server."""

__all__ = ["SERVICE", "add_servicer", "pb"]
