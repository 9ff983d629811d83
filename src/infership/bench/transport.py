"""Sending one prepared request over and over on one connection, as cheaply as possible.

The generator must cost the server little, because both share the machine's cores. HTTP/1.1 is
therefore a bare :class:`asyncio.Protocol` that writes the prepared request bytes in one call
and feeds the answer to httptools (llhttp, the parser uvicorn uses; it comes with
``uvicorn[standard]``). Per request that is one ``write`` and a few C callbacks: no header
dicts, no URL parsing, no body object. gRPC sends a request serialized once, as raw bytes, and
does not deserialize the answer.

A :class:`Target` opens :class:`Connection` s; a connection's :meth:`~Connection.send` returns
None for success or the kind of error (``http 503``, ``connect``, ``timeout``, ``protocol``...).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

import httptools

from infership.bench.payloads import HttpRequest


class Connection(Protocol):
    async def send(self) -> str | None:
        """Send the request once and wait for the whole answer; None on success, else the
        kind of error."""

    @property
    def reusable(self) -> bool:
        """False once the server has closed the connection or said it will (``Connection:
        close``, as a draining server does): then it is replaced, which is not an error."""

    async def close(self) -> None: ...


class Target(Protocol):
    label: str
    """How the target is named in reports (its URL)."""

    async def connect(self) -> Connection: ...


def split_url(url: str) -> tuple[str, int]:
    """``http://host:port`` → (host, port); raises ValueError for anything else."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "grpc") or not parts.hostname:
        raise ValueError(f"target {url!r}: expected http://HOST:PORT or grpc://HOST:PORT")
    if parts.path not in ("", "/"):
        raise ValueError(f"target {url!r}: give the server's base URL; the payload sets the path")
    default = 8001 if parts.scheme == "grpc" else 80
    return parts.hostname, parts.port or default


@dataclass
class HttpTarget:
    """An HTTP/1.1 server; every connection sends ``request`` with keep-alive."""

    url: str
    request: HttpRequest
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.host, self.port = split_url(self.url)
        self.label = self.url
        self._wire = self.request.wire(f"{self.host}:{self.port}")

    async def connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: _HttpConnection(self._wire, self.timeout_s), self.host, self.port
        )
        return protocol


class _HttpConnection(asyncio.Protocol):
    def __init__(self, wire: bytes, timeout_s: float) -> None:
        self._wire = wire
        self._timeout_s = timeout_s
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._answer: asyncio.Future[str | None] | None = None
        self._closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish("protocol")
            self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._finish("disconnected")

    # httptools callbacks

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        self._finish(None if 200 <= status < 300 else f"http {status}")
        if not self._parser.should_keep_alive():
            self._abort()

    # Connection

    @property
    def reusable(self) -> bool:
        return not self._closed and self._transport is not None

    async def send(self) -> str | None:
        if self._closed or self._transport is None:
            return "disconnected"
        self._answer = asyncio.get_running_loop().create_future()
        self._transport.write(self._wire)
        try:
            return await asyncio.wait_for(self._answer, self._timeout_s)
        except TimeoutError:
            self._abort()  # the answer may still come; this connection can no longer be trusted
            return "timeout"

    async def close(self) -> None:
        self._abort()

    def _abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    def _finish(self, outcome: str | None) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(outcome)


@dataclass
class GrpcTarget:
    """An Open Inference Protocol gRPC server (``inference.GRPCInferenceService/ModelInfer``).

    ``request`` is a serialized ``ModelInferRequest`` (see :func:`grpc_infer_request`). With
    ``stream``, each connection keeps one ``ModelStreamInfer`` call open and sends every
    request on it, as tritonclient's ``async_stream_infer`` does.
    """

    url: str
    request: bytes
    timeout_s: float = 30.0
    stream: bool = False

    def __post_init__(self) -> None:
        self.host, self.port = split_url(self.url)
        self.label = self.url

    async def connect(self) -> Connection:
        import grpc

        channel = grpc.aio.insecure_channel(f"{self.host}:{self.port}")
        try:
            await asyncio.wait_for(channel.channel_ready(), self._connect_timeout)
        except TimeoutError:
            await channel.close()
            raise ConnectionError(f"no gRPC server answered at {self.host}:{self.port}") from None
        if self.stream:
            return _GrpcStreamConnection(channel, self.request, self.timeout_s)
        return _GrpcConnection(channel, self.request, self.timeout_s)

    _connect_timeout = 10.0


class _GrpcConnection:
    def __init__(self, channel: object, request: bytes, timeout_s: float) -> None:
        import grpc

        assert isinstance(channel, grpc.aio.Channel)
        self._channel = channel
        # No serializers: the request goes as the bytes given, the answer stays bytes.
        self._call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer"
        )
        self._request = request
        self._timeout_s = timeout_s
        self._grpc = grpc

    @property
    def reusable(self) -> bool:
        return True  # a channel reconnects by itself

    async def send(self) -> str | None:
        try:
            await self._call(self._request, timeout=self._timeout_s)
        except self._grpc.aio.AioRpcError as exc:
            return f"grpc {exc.code().name}"
        return None

    async def close(self) -> None:
        await self._channel.close()


class _GrpcStreamConnection:
    """One ``ModelStreamInfer`` call; ``send`` writes the request and reads its answer. A
    connection has one sender at a time, so answers cannot be taken for another's."""

    def __init__(self, channel: object, request: bytes, timeout_s: float) -> None:
        import grpc

        assert isinstance(channel, grpc.aio.Channel)
        self._channel = channel
        # No serializers: the request goes as the bytes given, the answers stay bytes.
        method: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer"
        )
        self._call = method()
        self._request = request
        self._timeout_s = timeout_s
        self._broken = False
        self._grpc = grpc

    @property
    def reusable(self) -> bool:
        return not self._broken

    async def send(self) -> str | None:
        try:
            await self._call.write(self._request)
            answer = await asyncio.wait_for(self._call.read(), self._timeout_s)
        except TimeoutError:
            self._broken = True  # a late answer would be read as the next request's
            return "timeout"
        except self._grpc.aio.AioRpcError as exc:
            self._broken = True
            return f"grpc {exc.code().name}"
        if not isinstance(answer, bytes):  # grpc.aio.EOF: the server ended the stream
            self._broken = True
            return "protocol"
        # Not deserialized: error_message (field 1) is written first, and only when set.
        return "grpc stream error" if answer[:1] == b"\x0a" else None

    async def close(self) -> None:
        self._call.cancel()
        await self._channel.close()
