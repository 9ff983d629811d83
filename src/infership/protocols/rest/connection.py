"""HTTP/1.1 connections that cannot be held hostage by slow or oversized requests.

uvicorn arms a timer only between requests on a kept-alive connection: a client that opens a
connection and sends nothing, or sends its headers one byte every few seconds (slowloris), or
its body at a trickle, holds a connection slot for ever, and ``limit_concurrency`` counts
those slots, so a few hundred such clients make the server answer 503 to everyone. httptools
also puts no bound on header size. This protocol adds both bounds:

- the request head (line and headers) must arrive within ``header_timeout_s`` of the
  connection opening or of the previous response, and weigh at most ``max_header_bytes``
  (431 otherwise);
- the body must arrive within ``body_timeout_s`` of the head (408 otherwise);
- what the server writes must be read: a connection whose unsent response bytes drain slower
  than ``min_send_rate`` bytes/s over ``send_window_s`` is aborted. A closed transport keeps
  its unsent bytes until the peer reads them, so without this a client that sends a large
  ``id`` (echoed back) and never reads held the response in memory, and its connection slot,
  for as long as it kept the socket open: 20 such clients held 440 MB.

It also counts connections itself, in place of uvicorn's ``limit_concurrency``, which counts
an idle kept-alive connection like a busy one: 260 clients polling ``/v2/health/live`` every
few seconds held every slot, and inference got 503 (issue 16, F4). At the cap, connections that
are doing nothing for anyone (kept alive between requests, or slower than ``HEAD_GRACE_S`` with
a request head) are closed, longest idle first, before a request is refused; and no single
address may hold more than ``max_per_client`` connections. Its own answers (503, 408, 431, 400,
501) are JSON ``{"error": ...}`` like every other error, a 503 with ``Retry-After``.

Deadlines are checked by one timer per server (``_Watchdog``), not a timer per request, so
they are enforced up to a quarter of the timeout late (at most 1 s). Each small response
leaves in one ``send()`` rather than two (see ``_Coalescing``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any, ClassVar

import orjson
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

HEAD_GRACE_S = 1.0

_PIPELINE_SLICE = 4096
"""Bytes parsed at a time between requests (see ``GuardedHttpProtocol._feed``)."""
"""A connection still sending its request head after this long may be closed at the cap."""

STATUS_LINE.setdefault(501, b"HTTP/1.1 501 Not Implemented\r\n")


class _Rejected(Exception):
    """Stops the parser once the connection has been answered and closed."""


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 60.0
    max_header_bytes: ClassVar[int] = 32 * 1024
    max_per_client: ClassVar[int | None] = None
    """Most connections one client address may hold; None: half of ``limit_concurrency``."""
    max_pipelined: ClassVar[int] = 32
    """Pipelined requests parsed ahead of the one being answered; the rest wait unparsed."""
    min_send_rate: ClassVar[int] = 64 * 1024
    """Bytes/s a client must read its pending response at (see ``check_sending``)."""
    send_window_s: ClassVar[float] = 10.0
    """Seconds over which ``min_send_rate`` is measured."""
    _watchdog: ClassVar[_Watchdog]
    _per_client: ClassVar[Counter[str]]

    _limit: int | None = None
    """uvicorn's ``limit_concurrency``, enforced here (``_admit``) instead of by uvicorn."""
    _idle_since: float = 0.0
    """``loop.time()`` of its last response, or of the first byte of the head now arriving."""
    _in_head = False
    _host: str | None = None

    _deadline: float | None = None
    """``loop.time()`` by which what is awaited (``_awaited``) must have arrived; None: nothing."""
    _awaited = ""
    _awaited_s = 0.0
    _head_bytes = 0
    _rejected = False
    _backlog = b""
    """Bytes read but not parsed yet: pipelined requests beyond ``max_pipelined``."""
    _send_mark: tuple[float, int] | None = None
    """(``loop.time()``, bytes the peer had taken) when unsent bytes were last seen to move."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._watchdog = _Watchdog(min(cls.header_timeout_s, cls.body_timeout_s))
        cls._per_client = Counter()

    @classmethod
    def configured(
        cls,
        *,
        header_timeout_s: float,
        body_timeout_s: float,
        max_header_bytes: int,
        max_per_client: int | None = None,
        min_send_rate: int = 64 * 1024,
        send_window_s: float = 10.0,
    ) -> type[GuardedHttpProtocol]:
        """A subclass with these limits: uvicorn takes a protocol class, not an instance."""
        return type(
            cls.__name__,
            (cls,),
            {
                "header_timeout_s": header_timeout_s,
                "body_timeout_s": body_timeout_s,
                "max_header_bytes": max_header_bytes,
                "max_per_client": max_per_client,
                "min_send_rate": min_send_rate,
                "send_window_s": send_window_s,
            },
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limit, self.limit_concurrency = self.limit_concurrency, None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Responses are written through this; flow control keeps the transport itself.
        self.transport = _Coalescing(transport, self.loop)  # type: ignore[assignment]
        self._idle_since = self.loop.time()
        self._in_head = False
        self._arm(self.header_timeout_s, "request headers")
        self._watchdog.watch(self)
        self._host = self.client[0] if self.client else None
        if self._host is not None:
            self._per_client[self._host] += 1
            cap = self._client_cap()
            excess = 0 if cap is None else self._per_client[self._host] - cap
            host = self._host
            if excess > 0 and not self._reclaim(excess, lambda c: c._host == host):
                self._reject(503, f"this address already has {cap} connections open; reuse them")

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        self._watchdog.forget(self)
        if self._host is not None:
            self._per_client[self._host] -= 1
            if not self._per_client[self._host]:
                del self._per_client[self._host]
            self._host = None
        super().connection_lost(exc)

    def _client_cap(self) -> int | None:
        if self.max_per_client is not None:
            return self.max_per_client
        return None if self._limit is None else max(1, self._limit // 2)

    def reclaimable(self, now: float) -> bool:
        """Whether closing this connection costs nobody a request: none is in flight, and it
        is not part-way through sending one (or has taken over HEAD_GRACE_S to send its
        head). RFC 9112 lets a server close an idle kept-alive connection at any time."""
        if self._rejected or self.transport.is_closing():
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False
        return not self._in_head or now - self._idle_since > HEAD_GRACE_S

    def _admit(self) -> bool:
        """Whether a new request may start: under the cap, after closing what is reclaimable."""
        limit = self._limit
        if limit is None:
            return True
        if len(self.tasks) >= limit:
            return False
        excess = len(self.connections) - limit + 1
        return excess <= 0 or self._reclaim(excess, lambda c: True)

    def _reclaim(self, count: int, among: Callable[[GuardedHttpProtocol], bool]) -> bool:
        """Close ``count`` reclaimable connections ``among`` those given, longest idle first;
        False (and close none) when there are not that many."""
        now = self.loop.time()
        idle = sorted(
            (
                c
                for c in self.connections
                if c is not self
                and isinstance(c, GuardedHttpProtocol)
                and c.reclaimable(now)
                and among(c)
            ),
            key=lambda c: c._idle_since,
        )
        if len(idle) < count:
            return False
        for connection in idle[:count]:
            connection.transport.close()
            self.connections.discard(connection)  # now: uvicorn drops it when it is lost
        return True

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._backlog:  # read before the pause took effect: keep the order
            self._backlog += data
            self.flow.pause_reading()
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Parse ``data``, but stop once ``max_pipelined`` requests wait behind the one being
        answered: the rest stays in ``_backlog`` and reading pauses.

        uvicorn parses all it reads, queues every pipelined request it finds (a task's worth
        of objects each, 2 KB), and resumes reading after each response: 133,000 pipelined
        ``GET``s on one connection took the server from 190 to 470 MB, and nothing bounded
        it. Between requests the bytes are parsed a slice at a time so the queue stops at the
        bound; a body (more of the request being read) is parsed whole, as before."""
        view = memoryview(data)
        while view:
            if len(self.pipeline) >= self.max_pipelined:
                self._backlog = bytes(view)
                self.flow.pause_reading()
                return
            cycle = self.cycle
            in_body = cycle is not None and cycle.more_body and not cycle.response_complete
            size = len(view) if in_body else _PIPELINE_SLICE
            piece, view = view[:size], view[size:]
            super().data_received(bytes(piece))
            if self._rejected or self.transport.is_closing():
                return

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = True
        self._idle_since = self.loop.time()
        # A pipelined or kept-alive request: its head gets the same time as the first one's.
        self._arm(self.header_timeout_s, "request headers")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF, as on the wire
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        coding = _transfer_coding(self.headers)
        if coding is not None:
            self._reject(501, f"Transfer-Encoding {coding!r} is not supported; only chunked is")
            raise _Rejected
        self._arm(self.body_timeout_s, "the request body")
        if self._admit():
            super().on_headers_complete()
            return
        app, self.app = self.app, _busy  # uvicorn starts the cycle with self.app
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        self._deadline = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        super().on_response_complete()  # resumes reading and starts the next pipelined one
        if self.transport.is_closing():
            return
        if self._backlog and len(self.pipeline) < self.max_pipelined:
            backlog, self._backlog = self._backlog, b""
            self._feed(backlog)
        if self.pipeline or self._backlog:
            # Read more only once the pipeline is answered: else each response lets in
            # another whole read of requests, and the queue grows without bound.
            self.flow.pause_reading()

    def send_400_response(self, msg: str) -> None:
        # httptools reports our own _Rejected as a parse error; the client has its answer.
        if not self._rejected:
            self._reject(400, f"malformed HTTP request: {msg}")

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_header_bytes:
            self._reject(431, f"request headers over the limit of {self.max_header_bytes} bytes")
            raise _Rejected

    def _arm(self, seconds: float, what: str) -> None:
        # A deadline, not a timer: arming costs an assignment, and the watchdog's one timer
        # checks every connection (a timer armed and cancelled twice per request did not).
        self._deadline = self.loop.time() + seconds
        self._awaited = what
        self._awaited_s = seconds

    def check_deadline(self, now: float) -> None:
        """Called by the watchdog: answer 408 if what was awaited is late; abort the
        connection if the client does not read what was sent to it (``check_sending``)."""
        if self.check_sending(now):
            return
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            seconds = (
                self.header_timeout_s if self._awaited == "request headers" else self.body_timeout_s
            )
            self._reject(408, f"{self._awaited} did not arrive within {seconds:g} s")

    def check_sending(self, now: float) -> bool:
        """Abort the connection, and return True, if bytes have waited to be sent for
        ``send_window_s`` while the peer took fewer than ``min_send_rate`` bytes/s of them.

        The response is in the transport's buffer, whole; asyncio keeps it there, even after
        ``close()``, until the peer reads it. A client that never reads would hold that
        memory and the connection's slot for as long as it keeps the socket open."""
        transport = self.transport
        pending = transport.get_write_buffer_size()
        if not pending:
            self._send_mark = None
            return False
        sent = transport.written - pending if isinstance(transport, _Coalescing) else 0
        mark = self._send_mark
        if mark is None:
            self._send_mark = (now, sent)
            return False
        since, sent_then = mark
        elapsed = now - since
        if elapsed < self.send_window_s:
            return False
        if sent - sent_then >= self.min_send_rate * elapsed:
            self._send_mark = (now, sent)
            return False
        self._deadline = None
        self._send_mark = None
        self._rejected = True
        self.logger.info(
            "aborted a connection from %s: it read %d bytes in %.0f s with %d bytes waiting;"
            " a client must read its response at %d bytes/s or more",
            self.client, sent - sent_then, elapsed, pending, self.min_send_rate,
        )  # fmt: skip
        transport.abort()  # close() would keep the unsent bytes until the peer reads them
        return True

    def _reject(self, status: int, message: str) -> None:
        """Answer ``status`` and close; the ASGI app, if it was reading the body, sees a
        disconnect. A response the app already started is cut off instead (nothing better
        can be sent on that connection)."""
        self._deadline = None
        if self._rejected or self.transport.is_closing():
            return
        self._rejected = True
        if self.cycle is None or not self.cycle.response_started:
            body = orjson.dumps({"error": message})
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: application/json\r\n",
                        b"retry-after: 1\r\n" if status == 503 else b"",
                        b"content-length: %d\r\n" % len(body),
                        b"connection: close\r\n\r\n",
                        body,
                    ]
                )
            )
        self.logger.info("closed a connection from %s: %s", self.client, message)
        self.transport.close()


def _transfer_coding(headers: list[tuple[bytes, bytes]]) -> str | None:
    """A Transfer-Encoding other than plain ``chunked`` (the only coding we decode), else None.

    llhttp reads ``gzip, chunked`` as chunked and hands on the gzip bytes as the body."""
    for name, value in headers:
        if name == b"transfer-encoding":
            codings = [c.strip() for c in value.lower().split(b",")]
            if codings != [b"chunked"]:
                return value.decode("latin-1")
    return None


_BUSY = orjson.dumps({"error": "the server is at its connection limit; retry shortly"})


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer at the connection cap, in place of uvicorn's plain-text one."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", b"1"),
                (b"content-length", b"%d" % len(_BUSY)),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _BUSY})


class _Coalescing:
    """A transport that sends a response's head and a small body in one ``send()``.

    uvicorn writes the head when the app starts its response and the body when it sends it:
    two ``send()`` calls, two TCP segments. Each segment that finds the client asleep wakes it
    (on loopback, in the server's own time: 23 µs of the server's 216 µs per request on the
    trivial benchmark model, ``perf``), and a client woken by a head without its body only
    goes back to sleep. So a small write is held until the next write joins it, or until the
    event loop's next turn sends it alone (a head-only answer: HEAD, 204, a streamed body).
    """

    JOIN_BYTES = 64 * 1024
    """Writes larger than this are sent as they are: joining would copy them."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self.written = 0
        """Bytes handed to the transport so far (held ones not yet)."""

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            if len(data) > self.JOIN_BYTES:
                self._send(data)
            else:
                self._held = bytes(data)
                self._loop.call_soon(self.flush)
            return
        self._held = None
        if len(data) > self.JOIN_BYTES:
            self._send(held)
            self._send(data)
        else:
            self._send(held + data)

    def _send(self, data: bytes) -> None:
        if self._transport.is_closing():
            # Dropped, as asyncio's own transports do: uvloop's raise instead, and uvicorn
            # lets a pipelined response be written after the connection was lost.
            return
        self.written += len(data)
        self._transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():  # else the client is gone
            self._send(held)

    def writelines(self, lines: Any) -> None:
        self.flush()
        for line in lines:
            self._send(line)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # Everything else (get_extra_info, abort, set_protocol...) is the transport's own.
        return getattr(self._transport, name)


class _Watchdog:
    """One timer for all of a server's connections: it ticks a few times per timeout while
    any connection is open and answers 408 on those whose deadline has passed (so a deadline
    is enforced at most a quarter of the timeout late, and at most 1 s)."""

    def __init__(self, shortest_timeout_s: float) -> None:
        self._interval = min(1.0, max(0.01, shortest_timeout_s / 4))
        self._connections: set[GuardedHttpProtocol] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, connection: GuardedHttpProtocol) -> None:
        self._connections.add(connection)
        loop = connection.loop
        if self._timer is None or self._loop is not loop:  # or a server started in a new loop
            self._loop = loop
            self._timer = loop.call_later(self._interval, self._tick, loop)

    def forget(self, connection: GuardedHttpProtocol) -> None:
        self._connections.discard(connection)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            return  # the timer of an earlier loop: the new loop has its own
        self._timer = None
        now = loop.time()
        for connection in list(self._connections):
            connection.check_deadline(now)
        if self._connections:
            self._timer = loop.call_later(self._interval, self._tick, loop)


GuardedHttpProtocol._watchdog = _Watchdog(
    min(GuardedHttpProtocol.header_timeout_s, GuardedHttpProtocol.body_timeout_s)
)
