"""``inference.GRPCInferenceService``: parse the message, call the data plane, encode. Nothing else.

Every rpc goes through :func:`_rpc`, the one place our errors become gRPC statuses.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from infership.auth.policy import Access, AccessPolicy, bearer_token
from infership.dataplane import DataPlane
from infership.errors import ClientError, InfershipError, InvalidRequest
from infership.protocols.grpc._pb import pb
from infership.protocols.grpc.codec import (
    decode_infer_request,
    encode_infer_response,
    timeout_parameter,
)
from infership.protocols.grpc.errors import details_for, status_for, trailers_for

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[["InferenceServicer", Req, Context], Awaitable[Resp]]

READY = "READY"


def _rpc(access: Access) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Admit the caller for ``access`` (key, scope, rate), then answer our errors with their
    status code, message and retry hint. Operator errors and anything unexpected become
    INTERNAL with a generic message; the details go to the log."""

    def decorate(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def guarded(self: InferenceServicer, request: Req, context: Context) -> Resp:
            try:
                self.policy.admit(access, _token(context), context.peer())
                return await handler(self, request, context)
            except InfershipError as exc:
                code = status_for(exc)
                message = details_for(exc.message)
                if code is grpc.StatusCode.INTERNAL:
                    log.error("gRPC %s failed: %s", handler.__name__, exc)
                    message = f"{type(exc).__name__}: the server failed; see its log"
                await context.abort(code, message, trailing_metadata=trailers_for(exc))
            except Exception:
                log.exception("gRPC %s failed unexpectedly", handler.__name__)
                await context.abort(
                    grpc.StatusCode.INTERNAL, "internal server error; see the server log"
                )
            raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

        return guarded

    return decorate


def _token(context: Context) -> str | None:
    # Every value, joined as REST joins a repeated header: two keys are no key.
    values = [
        value
        for key, value in context.invocation_metadata() or ()
        if key == "authorization" and isinstance(value, str)
    ]
    return bearer_token(", ".join(values)) if values else None


class InferenceServicer:
    """The rpcs of ``inference.GRPCInferenceService`` over one :class:`DataPlane`.

    Registered with ``_pb.add_servicer(InferenceServicer(plane, policy), server)``.
    """

    def __init__(self, dataplane: DataPlane, policy: AccessPolicy) -> None:
        self.dataplane = dataplane
        self.policy = policy

    @_rpc(Access.HEALTH)
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live)

    @_rpc(Access.HEALTH)
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready)

    @_rpc(Access.HEALTH)
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        # tritonclient.grpc raises on any error status, so an unknown model is "not ready".
        try:
            ready = self.dataplane.model_ready(request.name, request.version or None)
        except ClientError:
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    @_rpc(Access.INFER)
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    @_rpc(Access.INFER)
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        metadata = self.dataplane.model_metadata(request.name, request.version or None)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata.get("versions", []),
            platform=metadata["platform"],
            inputs=[tensor(**spec) for spec in metadata["inputs"]],
            outputs=[tensor(**spec) for spec in metadata["outputs"]],
        )

    @_rpc(Access.INFER)
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        inference = decode_infer_request(request)
        # The client's gRPC deadline becomes the request's deadline, so a request whose caller
        # has given up is never computed. A cancelled call cancels this coroutine, which takes
        # the request out of the model's queue (outcome "cancelled").
        timeout = timeout_parameter(inference.parameters, context.time_remaining())
        if timeout is not None:
            inference.parameters["timeout"] = timeout
        result = await self.dataplane.infer(
            request.model_name, request.model_version or None, inference
        )
        return encode_infer_response(result, inference)

    @_rpc(Access.ADMIN)
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        entries = self.dataplane.repository_index()
        if request.ready:
            entries = [entry for entry in entries if entry["state"] == READY]
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[index(**entry) for entry in entries])

    @_rpc(Access.ADMIN)
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        unsupported = sorted(request.parameters)
        if unsupported:
            raise InvalidRequest(
                f"load parameters are not supported ({', '.join(unsupported)}); the model's"
                " files and model.yaml come from the repository"
            )
        await self.dataplane.load_model(_model_name(request))
        return pb.RepositoryModelLoadResponse()

    @_rpc(Access.ADMIN)
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        # tritonclient always sends unload_dependents; models here have no dependents.
        unsupported = sorted(set(request.parameters) - {"unload_dependents"})
        if unsupported:
            raise InvalidRequest(f"unload parameters are not supported ({', '.join(unsupported)})")
        await self.dataplane.unload_model(_model_name(request))
        return pb.RepositoryModelUnloadResponse()


def _model_name(request: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest) -> str:
    # kserve's proto numbers model_name 1, where Triton's (ours) has repository_name.
    name = request.model_name or request.repository_name
    if not name:
        raise InvalidRequest("model_name is required")
    return name
