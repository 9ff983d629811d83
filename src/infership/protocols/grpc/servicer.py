"""``inference.GRPCInferenceService``: parse the message, call the data plane, encode. Nothing else.

Every rpc goes through :func:`_rpc`, the one place our errors become gRPC statuses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
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

STREAM_WINDOW = 64
"""Requests of one ``ModelStreamInfer`` call in progress at once. Reading the stream pauses
while this many are unanswered, so a client that sends without reading its answers is held
back by HTTP/2 flow control instead of filling memory, and one stream still gives the
batcher enough requests to fill a batch. Large requests take more of the window (see
``InferenceServicer.stream_bytes``)."""


def _rpc(
    access: Access, *, stream: bool = False
) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """Admit the caller for ``access`` (key, scope, rate), then answer our errors with their
    status code, message and retry hint. Operator errors and anything unexpected become
    INTERNAL with a generic message; the details go to the log.

    A ``stream`` is only authenticated here: each request on it is admitted (its rate
    counted) as it arrives."""

    def decorate(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def guarded(self: InferenceServicer, request: Req, context: Context) -> Resp:
            try:
                if stream:
                    self.policy.authenticate(access, _token(context))
                else:
                    self.policy.admit(access, _token(context), context.peer())
                return await handler(self, request, context)
            except InfershipError as exc:
                code, message = _status(exc, handler.__name__)
                await context.abort(code, message, trailing_metadata=trailers_for(exc))
            except grpc.aio.AbortError:
                raise  # a stream's message that does not decode (decoding.guarded) ends it
            except Exception:
                log.exception("gRPC %s failed unexpectedly", handler.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)
            raise AssertionError("unreachable: context.abort raises")  # pragma: no cover

        return guarded

    return decorate


_INTERNAL = "internal server error; see the server log"


def _status(exc: InfershipError, rpc: str) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for ``exc``; a failure of the server's own
    (INTERNAL) is logged and answered without its details."""
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("gRPC %s failed: %s", rpc, exc)
        return code, f"{type(exc).__name__}: the server failed; see its log"
    return code, details_for(exc.message)


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

    Registered with ``_pb.add_servicer(InferenceServicer(plane, policy, bytes), server)``.
    """

    def __init__(self, dataplane: DataPlane, policy: AccessPolicy, stream_bytes: int) -> None:
        self.dataplane = dataplane
        self.policy = policy
        self.stream_bytes = stream_bytes
        """Bytes of requests one stream may have in progress (``grpc.max_message_bytes``): as
        much as one unary call may send. A request takes a share of STREAM_WINDOW in
        proportion to its size, so one of the largest size is alone in progress."""

    def _window_share(self, request: pb.ModelInferRequest) -> int:
        return min(STREAM_WINDOW, 1 + request.ByteSize() * STREAM_WINDOW // self.stream_bytes)

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
        return await self._infer(request, context)

    @_rpc(Access.INFER, stream=True)
    async def ModelStreamInfer(
        self, requests: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> None:
        """Each request is computed as it arrives, at most STREAM_WINDOW at once, and answered
        when done: answers come in the order requests finish, each echoing its request's id.
        A request that fails gets ``error_message`` and the stream goes on."""
        token, peer = _token(context), context.peer()
        window = asyncio.Semaphore(STREAM_WINDOW)
        writing = asyncio.Lock()  # grpc.aio allows one write at a time on a call
        answering: set[asyncio.Task[None]] = set()

        async def answer(request: pb.ModelInferRequest, share: int) -> None:
            try:
                try:
                    self.policy.admit(Access.INFER, token, peer)
                    reply = pb.ModelStreamInferResponse(
                        infer_response=await self._infer(request, context)
                    )
                except InfershipError as exc:
                    reply = _stream_error(request, _status(exc, "ModelStreamInfer")[1])
                except Exception:
                    log.exception("gRPC ModelStreamInfer failed unexpectedly")
                    reply = _stream_error(request, _INTERNAL)
                async with writing:
                    await context.write(reply)
            except (grpc.aio.AbortError, grpc.aio.UsageError):
                pass  # the call has ended (a message did not decode): its status says so
            finally:
                for _ in range(share):
                    window.release()

        try:
            async for request in requests:
                share = self._window_share(request)
                for _ in range(share):  # this loop is the only one that acquires: no deadlock
                    await window.acquire()
                task = asyncio.create_task(answer(request, share))
                answering.add(task)
                task.add_done_callback(answering.discard)
            if answering:
                await asyncio.gather(*answering)
        finally:
            # The client went away, or a message did not decode: what is still computing is
            # cancelled, which takes it out of its model's queue.
            for task in answering:
                task.cancel()

    async def _infer(
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


def _stream_error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )


def _model_name(request: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest) -> str:
    # kserve's proto numbers model_name 1, where Triton's (ours) has repository_name.
    name = request.model_name or request.repository_name
    if not name:
        raise InvalidRequest("model_name is required")
    return name
