"""guarded() registration and DecodeGuard on a tiny grpc.aio server with one method of each
kind, over a loopback socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from infership.protocols.grpc.decoding import DecodeGuard, guarded
from infership.protocols.grpc.generated import health_pb2

Request = health_pb2.HealthCheckRequest
Response = health_pb2.HealthCheckResponse
BAD_UTF8 = b"\x0a\x02\xff\xfe"
GOOD = Request(service="a").SerializeToString()


async def one(request: Request, context: Any) -> Response:
    return Response(status=len(request.service))


async def many(request: Request, context: Any) -> AsyncIterator[Response]:
    for _ in range(2):
        yield Response(status=len(request.service))


async def written(request: Request, context: Any) -> None:
    await context.write(Response(status=len(request.service)))


async def collect(requests: AsyncIterator[Request], context: Any) -> Response:
    return Response(status=len([r async for r in requests]))


async def echo(requests: AsyncIterator[Request], context: Any) -> AsyncIterator[Response]:
    async for request in requests:
        yield Response(status=len(request.service))


HANDLERS = {
    "One": grpc.unary_unary_rpc_method_handler(one, Request.FromString, Response.SerializeToString),
    "Many": grpc.unary_stream_rpc_method_handler(
        many, Request.FromString, Response.SerializeToString
    ),
    "Written": grpc.unary_stream_rpc_method_handler(
        written, Request.FromString, Response.SerializeToString
    ),
    "Collect": grpc.stream_unary_rpc_method_handler(
        collect, Request.FromString, Response.SerializeToString
    ),
    "Echo": grpc.stream_stream_rpc_method_handler(
        echo, Request.FromString, Response.SerializeToString
    ),
}


@pytest.fixture(params=["registered", "generic", "interceptor"])
async def channel(request: pytest.FixtureRequest) -> AsyncIterator[grpc.aio.Channel]:
    """A server whose handlers are guarded at registration (as generated code registers them:
    registered methods or a generic handler), or by the interceptor."""
    generic = grpc.method_handlers_generic_handler("t.S", HANDLERS)
    if request.param == "interceptor":
        server = grpc.aio.server(interceptors=[DecodeGuard()])
        server.add_generic_rpc_handlers((generic,))
    else:
        server = grpc.aio.server()
        registrar = guarded(server)
        if request.param == "registered":
            registrar.add_registered_method_handlers("t.S", HANDLERS)
        else:
            registrar.add_generic_rpc_handlers((generic,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(0)


async def call(channel: grpc.aio.Channel, method: str, *messages: bytes) -> list[int]:
    """Send ``messages`` as they are; the statuses of the responses."""
    path = f"/t.S/{method}"
    decode = Response.FromString
    if method in ("One", "Many", "Written"):
        if method == "One":
            return [(await channel.unary_unary(path, None, decode)(messages[0])).status]
        stream = channel.unary_stream(path, None, decode)(messages[0])
        return [response.status async for response in stream]
    if method == "Collect":
        return [(await channel.stream_unary(path, None, decode)(iter(messages))).status]
    return [r.status async for r in channel.stream_stream(path, None, decode)(iter(messages))]


@pytest.mark.parametrize(
    ("method", "answer"),
    [("One", [1]), ("Many", [1, 1]), ("Written", [1]), ("Collect", [2]), ("Echo", [1, 1])],
)
async def test_every_kind_of_method_still_gets_its_decoded_request(
    channel: grpc.aio.Channel, method: str, answer: list[int]
) -> None:
    assert await call(channel, method, GOOD, GOOD) == answer


@pytest.mark.parametrize("method", ["One", "Many", "Written", "Collect", "Echo"])
async def test_a_message_that_does_not_decode_is_invalid_argument_on_every_kind(
    channel: grpc.aio.Channel, method: str
) -> None:
    # In streams, the bad message comes second: a refusal mid-stream, after a good one.
    messages = (BAD_UTF8,) if method in ("One", "Many", "Written") else (GOOD, BAD_UTF8)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, method, *messages)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "the request is not a valid grpc.health.v1.HealthCheckRequest message:"
        " String field had bad UTF-8"
    )
    assert await call(channel, "One", GOOD) == [1]


async def test_unknown_methods_stay_unimplemented(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary("/t.S/Nope")(b"")
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
