"""Request bodies: read whole under a size limit, inside a memory budget all requests share,
and, before a connection closes, the rest of one nobody read (a lingering close).

A large body costs far more memory while it is read and decoded than the tensor it becomes: a
``[1, 3, 224, 224]`` JSON tensor is 2.9 MB of text, held once as the body and again by the JSON
parser, for a 0.6 MB FP32 array. Read by every connection at once, 32 such bodies took the
server from 290 MB to 785 MB. :class:`BodyBudget` lets only so many bytes of large bodies be in
hand at a time; the others wait with their data still in the kernel's socket buffers, where
TCP flow control slows their senders, and are read in arrival order as bytes are given back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import Receive

from infership.errors import ClientDisconnected, PayloadTooLarge

SMALL_BODY_BYTES = 64 * 1024
"""Bodies declared smaller than this are read without the budget: a per-request toll on the
fastest path would cost more than their bytes (256 connections × 64 KiB is 16 MiB at most)."""


def content_length(header: str | bytes | None) -> int | None:
    """The body size a ``Content-Length`` value declares, or None (absent, or not a number)."""
    if header is None or not (header.isascii() and header.isdigit()):
        return None
    return int(header)


async def receive_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    """The whole body from ASGI ``receive``, refusing (413) anything over ``limit`` bytes
    before (``declared``: its Content-Length) and while reading. ClientDisconnected if the
    client leaves first."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected("the client closed the connection while sending")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        if not message.get("more_body", False):
            if not chunks:
                return chunk  # the usual case: the whole body in one message, no copy
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


async def read_body(request: Request, limit: int) -> bytes:
    """``receive_body`` for a routed endpoint; Starlette's ``form()`` then parses the body."""
    declared = content_length(request.headers.get("content-length"))
    body = await receive_body(request.receive, limit, declared)
    request._body = body  # how Starlette knows the stream is read, and what form() parses
    return body


def closes_after(
    request_connection: str | None, response_headers: Mapping[str, str], http_version: str | None
) -> bool:
    """Whether the connection is closed once this response is sent."""
    response_connection = next(
        (v for k, v in response_headers.items() if k.lower() == "connection"), ""
    )
    tokens = f"{request_connection or ''},{response_connection}"
    return "close" in tokens.lower() or http_version == "1.0"


async def drain(receive: Receive, limit: int) -> None:
    """Read what is left of a body nobody read, and drop it (up to ``limit`` bytes).

    Refusals are answered before the body is read (``DataPlane.admit``). On a kept-alive
    connection the server skips the rest of the body as it arrives; but closing a socket with
    unread data sends a TCP reset, which makes the client discard the answer it has not read
    yet: it would see "connection reset" instead of our 503 and its Retry-After. So before a
    close, the body is read first, as web servers do with a lingering close."""
    left = limit
    while left >= 0:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        left -= len(message.get("body", b""))


async def discard_unread(request: Request, limit: int) -> None:
    """``drain`` for a routed endpoint, unless it read the body (``read_body``)."""
    if hasattr(request, "_body"):
        return
    await drain(request.receive, limit)


class BodyBudget:
    """At most ``capacity`` bytes of large request bodies in hand (read or being decoded).

    First come, first served: a waiting body is never overtaken by a smaller one behind it, so
    a large body cannot starve. A body larger than the whole budget is read alone. A body of
    unknown size (chunked) takes the whole budget, as the worst it could be. A sender that
    trickles holds its share for at most ``http.body_timeout_s`` (then it gets 408).
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"a body budget needs a positive capacity, not {capacity}")
        self.capacity = capacity
        self._free = capacity
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def free(self) -> int:
        return self._free

    def hold(self, size: int | None) -> contextlib.AbstractAsyncContextManager[None]:
        """Wait until ``size`` bytes (declared; None if unknown) fit, hold them in the block."""
        if size is not None and size < SMALL_BODY_BYTES:
            return _UNBUDGETED  # the common case costs no generator, no await
        return _Share(self, self.capacity if size is None else min(size, self.capacity))

    async def acquire(self, share: int) -> None:
        if not self._waiting and share <= self._free:
            self._free -= share
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (share, granted)
        self._waiting.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(share)  # granted just as the caller went away: give it back
            else:
                with contextlib.suppress(ValueError):  # _grant may have dropped it already
                    self._waiting.remove(entry)
                self._grant()  # the head may have left: those behind it may fit now
            raise

    def release(self, share: int) -> None:
        self._free += share
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            share, granted = self._waiting[0]
            if granted.done():  # cancelled; its waiter has not run its except yet
                self._waiting.popleft()
                continue
            if share > self._free:
                return
            self._waiting.popleft()
            self._free -= share
            granted.set_result(None)


class _Share(contextlib.AbstractAsyncContextManager[None]):
    def __init__(self, budget: BodyBudget, size: int) -> None:
        self._budget = budget
        self._size = size

    async def __aenter__(self) -> None:
        await self._budget.acquire(self._size)

    async def __aexit__(self, *exc_info: object) -> None:
        self._budget.release(self._size)


_UNBUDGETED: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
