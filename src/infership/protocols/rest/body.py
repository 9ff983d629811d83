"""Request bodies: read whole under a size limit, inside a memory budget all requests share,
and, before a connection closes, the rest of one nobody read (a lingering close).

A large body costs far more memory while it is read and decoded than the tensor it becomes: a
``[1, 3, 224, 224]`` JSON tensor is 2.9 MB of text, held once as the body and again by the JSON
parser, for a 0.6 MB FP32 array. Read by every connection at once, 32 such bodies took the
server from 290 MB to 785 MB. :class:`BodyBudget` lets only so many bytes of large bodies be in
hand at a time; the others wait with their data still in the kernel's socket buffers, where
TCP flow control slows their senders, and are read in arrival order as bytes are given back.

A share of the budget must not become a lock that one client holds (:class:`BodyBudget` says
how): a body joins the queue only once its first bytes are in, and keeps its share only while
it keeps arriving or nobody else waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import Message, Receive

from infership.errors import ClientDisconnected, PayloadTooLarge, RequestTimeout

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
    a large body cannot starve. A body larger than the whole budget is read alone. How
    :meth:`read` keeps one client from holding the budget (issue 16, F3):

    - a body joins the queue only once its first ``SMALL_BODY_BYTES`` are in: a sender that
      trickles waits for its own bytes, not in front of everyone else;
    - its share is reserved for it (its declared size; the whole budget when the size is
      unknown or the body is compressed, as the worst it could become), and it keeps the share
      only while it arrives at ``min_rate`` bytes/s or nobody else waits: a body slower than
      that over ``WINDOW_S`` while others wait is answered 408 and its bytes are freed.

    So one client holds the budget for at most ``WINDOW_S`` unless it really sends at
    ``min_rate``; alone on the server, a slow sender is never cut off by this rule.
    """

    WINDOW_S = 0.5
    """Seconds over which a body's rate is measured against ``min_rate``."""

    def __init__(self, capacity: int, *, min_rate: int = 64 * 1024) -> None:
        if capacity <= 0:
            raise ValueError(f"a body budget needs a positive capacity, not {capacity}")
        self.capacity = capacity
        self.min_rate = min_rate
        self._free = capacity
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def free(self) -> int:
        return self._free

    @property
    def contended(self) -> bool:
        """Whether a body is waiting for bytes to be given back."""
        return bool(self._waiting)

    def read(
        self, receive: Receive, limit: int, declared: int | None, *, encoded: bool = False
    ) -> contextlib.AbstractAsyncContextManager[bytes]:
        """The whole body, read within the budget and held in it until the block ends.

        ``declared`` is the Content-Length (None: chunked); ``encoded`` a Content-Encoding
        other than identity, whose body is charged the whole budget before it is decoded.
        Refuses (413) anything over ``limit`` bytes, before and while reading."""
        if not encoded and declared is not None and declared < SMALL_BODY_BYTES:
            return _SmallBody(receive, limit, declared)
        return _BudgetedBody(self, receive, limit, declared, encoded)

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
        if share:
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


class _SmallBody(contextlib.AbstractAsyncContextManager[bytes]):
    """A small identity body: read as it comes, outside the budget (no task, no timer)."""

    def __init__(self, receive: Receive, limit: int, declared: int | None) -> None:
        self._receive = receive
        self._limit = limit
        self._declared = declared

    async def __aenter__(self) -> bytes:
        return await receive_body(self._receive, self._limit, self._declared)

    async def __aexit__(self, *exc_info: object) -> None:
        return None


class _BudgetedBody(contextlib.AbstractAsyncContextManager[bytes]):
    """One large, chunked or compressed body read under :class:`BodyBudget`'s rules."""

    def __init__(
        self,
        budget: BodyBudget,
        receive: Receive,
        limit: int,
        declared: int | None,
        encoded: bool,
    ) -> None:
        self._budget = budget
        self._receive = receive
        self._limit = limit
        self._declared = declared
        self._encoded = encoded
        self._held = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self._more = True

    async def __aenter__(self) -> bytes:
        budget = self._budget
        if self._declared is not None and self._declared > self._limit:
            raise PayloadTooLarge(
                f"request body of {self._declared} bytes is over the limit of {self._limit}"
            )
        # The first bytes outside the budget: SMALL_BODY_BYTES per connection at most, which
        # the connection cap bounds as it bounds small bodies.
        while self._more and self._size < SMALL_BODY_BYTES:
            self._take(await self._receive())
        if self._encoded or self._declared is None:
            share = budget.capacity  # the worst a compressed or unsized body can become
        else:
            share = min(self._declared, budget.capacity)
        if not self._more and not self._encoded:
            share = min(self._size, budget.capacity)
        await budget.acquire(share)
        self._held = share
        try:
            if self._more:
                await self._read_rest()
        except BaseException:
            await self.__aexit__()  # no block runs, so nothing else gives the bytes back
            raise
        chunks, self._chunks = self._chunks, []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def __aexit__(self, *exc_info: object) -> None:
        held, self._held = self._held, 0
        self._budget.release(held)

    async def _read_rest(self) -> None:
        budget = self._budget
        loop = asyncio.get_running_loop()
        window_end = loop.time() + budget.WINDOW_S
        window_start_size = self._size
        while self._more:
            message = asyncio.ensure_future(self._receive())
            try:
                while not message.done():
                    await asyncio.wait((message,), timeout=max(0.0, window_end - loop.time()))
                    if loop.time() < window_end:
                        continue
                    delivered = self._size - window_start_size
                    if budget.contended and delivered < budget.min_rate * budget.WINDOW_S:
                        raise RequestTimeout(
                            f"the request body arrived at {delivered / budget.WINDOW_S:.0f}"
                            f" bytes/s while other bodies waited for memory; a body of"
                            f" {SMALL_BODY_BYTES} bytes or more must arrive at"
                            f" {budget.min_rate} bytes/s or more when the server is busy"
                        )
                    window_end, window_start_size = loop.time() + budget.WINDOW_S, self._size
            except BaseException:
                message.cancel()
                raise
            self._take(message.result())

    def _take(self, message: Message) -> None:
        if message["type"] != "http.request":
            raise ClientDisconnected("the client closed the connection while sending")
        chunk: bytes = message.get("body", b"")
        self._size += len(chunk)
        if self._size > self._limit:
            raise PayloadTooLarge(f"request body is over the limit of {self._limit} bytes")
        if chunk:
            self._chunks.append(chunk)
        self._more = message.get("more_body", False)
