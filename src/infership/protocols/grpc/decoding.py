"""A request message that does not decode is the client's mistake: INVALID_ARGUMENT, not UNKNOWN.

grpcio decodes each request with its method's deserializer before the handler runs, and answers
any exception from it with UNKNOWN and the exception's Python repr
(``Unexpected <class 'google.protobuf.message.DecodeError'>: ...``); no handler can intervene.
:func:`guarded` stands in for the server while services register (``add_*_to_server``), and
gives every method it registers (inference, health, and any added later) an identity
deserializer, decoding inside the handler instead, where a failure can be answered with a status
and message of our choosing. It wraps each method once, at registration: a server interceptor
(:class:`DecodeGuard`, kept for servers built elsewhere) would run a coroutine on every call,
which on the trivial model cost about a tenth of the call (docs/grpc.md, Performance).

Behaviors must be ``grpc.aio`` style (coroutines or async generators), and a request-streaming
one must read the request iterator it is given, not ``context.read()``, which would see bytes.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeAlias

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
Decode = Callable[[bytes], Any]
Behavior = Callable[..., Any]  # the stubs type behaviors with the sync context
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in the stubs

_MAX_REASON: Final = 200


class Registrar(Protocol):
    """What generated ``add_*_to_server`` functions call on a server."""

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None: ...

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, Handler]
    ) -> None: ...


def guarded(server: grpc.aio.Server) -> Registrar:
    """``server`` as registration sees it: every handler registered through it is guarded.

    >>> add_servicer(servicer, guarded(server))  # doctest: +SKIP
    """
    return _GuardedRegistrar(server)


class _GuardedRegistrar:
    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[Any]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_GuardedService(handler) for handler in generic_rpc_handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, Handler]
    ) -> None:
        guarded_ = {method: guard(handler) for method, handler in method_handlers.items()}
        self._server.add_registered_method_handlers(service_name, guarded_)


class _GuardedService(grpc.GenericRpcHandler):
    """A generic handler whose methods come out guarded, each wrapped on its first call."""

    def __init__(self, handler: grpc.GenericRpcHandler) -> None:
        self._handler = handler
        # Only methods that exist are kept: unknown names cannot grow this.
        self._guarded: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method = handler_call_details.method
        found = self._guarded.get(method)
        if found is None:
            handler = self._handler.service(handler_call_details)
            if handler is None:
                return None
            found = self._guarded[method] = guard(handler)
        return found


class DecodeGuard(grpc.aio.ServerInterceptor):
    """Refuse undecodable requests with INVALID_ARGUMENT, on every method of the server, as an
    interceptor (a coroutine per call: :func:`guarded` costs less where registration is ours).

    >>> server = grpc.aio.server(interceptors=[DecodeGuard()])  # doctest: +SKIP
    """

    def __init__(self) -> None:
        # Handlers are registered before the server starts and never change, so each method
        # is wrapped once. Only methods that exist are kept: unknown names cannot grow this.
        self._guarded: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        guarded = self._guarded.get(method)
        if guarded is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            guarded = self._guarded[method] = guard(handler)
        return guarded


def guard(handler: Handler) -> Handler:
    """``handler`` with an identity deserializer, decoding in its behavior instead."""
    decode = handler.request_deserializer
    if decode is None:  # the method takes raw bytes already
        return handler
    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        behavior = _one_request(handler.unary_unary, decode)
        return grpc.unary_unary_rpc_method_handler(behavior, response_serializer=serialize)
    if handler.unary_stream is not None:
        behavior = _one_request(handler.unary_stream, decode)
        return grpc.unary_stream_rpc_method_handler(behavior, response_serializer=serialize)
    if handler.stream_unary is not None:
        behavior = _request_stream(handler.stream_unary, decode)
        return grpc.stream_unary_rpc_method_handler(behavior, response_serializer=serialize)
    assert handler.stream_stream is not None
    behavior = _request_stream(handler.stream_stream, decode)
    return grpc.stream_stream_rpc_method_handler(behavior, response_serializer=serialize)


async def decoded(decode: Decode, raw: bytes, context: Context) -> Any:
    """``decode(raw)``, or the call ends with INVALID_ARGUMENT naming the message type."""
    try:
        return decode(raw)
    except Exception as exc:  # whatever the deserializer raises, the bytes are the cause
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _refusal(decode, exc))


def _refusal(decode: Decode, exc: Exception) -> str:
    descriptor = getattr(getattr(decode, "__self__", None), "DESCRIPTOR", None)
    kind = getattr(descriptor, "full_name", "request")
    # upb says "Error parsing message with type 'X': <reason>"; X is named already.
    reason = str(exc).rpartition("': ")[2][:_MAX_REASON] or "it does not parse"
    return f"the request is not a valid {kind} message: {reason}"


# grpc.aio tells handler styles apart by function kind: a coroutine function answers once or
# writes through context.write; an async generator function yields its responses. Each wrapper
# keeps the kind of the behavior it wraps.


def _one_request(behavior: Behavior, decode: Decode) -> Behavior:
    if inspect.isasyncgenfunction(behavior):

        async def stream_from_one(raw: bytes, context: Context) -> AsyncIterator[Any]:
            async for response in behavior(await decoded(decode, raw, context), context):
                yield response

        return stream_from_one

    if inspect.iscoroutinefunction(behavior):

        async def from_one_awaited(raw: bytes, context: Context) -> Any:
            try:
                request = decode(raw)
            except Exception as exc:  # whatever the deserializer raises, the bytes are the cause
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _refusal(decode, exc))
            return await behavior(request, context)

        return from_one_awaited

    async def from_one(raw: bytes, context: Context) -> Any:
        result = behavior(await decoded(decode, raw, context), context)
        return (await result) if inspect.isawaitable(result) else result

    return from_one


def _request_stream(behavior: Behavior, decode: Decode) -> Behavior:
    async def requests(raw: AsyncIterator[bytes], context: Context) -> AsyncIterator[Any]:
        async for message in raw:
            yield await decoded(decode, message, context)

    if inspect.isasyncgenfunction(behavior):

        async def stream_from_stream(raw: AsyncIterator[bytes], context: Context) -> Any:
            async for response in behavior(requests(raw, context), context):
                yield response

        return stream_from_stream

    async def from_stream(raw: AsyncIterator[bytes], context: Context) -> Any:
        result = behavior(requests(raw, context), context)
        return (await result) if inspect.isawaitable(result) else result

    return from_stream
