"""HTTP/1.1 connections that cannot be held hostage by slow or oversized requests.

uvicorn arms a timer only between requests on a kept-alive connection: a client that opens a
connection and sends nothing, or sends its headers one byte every few seconds (slowloris), or
its body at a trickle, holds a connection slot for ever, and ``limit_concurrency`` counts
those slots, so a few hundred such clients make the server answer 503 to everyone. httptools
also puts no bound on header size. This protocol adds both bounds:

- the request head (line and headers) must arrive within ``header_timeout_s`` of the
  connection opening or of the previous response, and weigh at most ``max_header_bytes``
  (431 otherwise);
- the body must arrive within ``body_timeout_s`` of the head (408 otherwise).

Deadlines are checked by one timer per server (``_Watchdog``), not a timer per request, so
they are enforced up to a quarter of the timeout late (at most 1 s). Each small response
leaves in one ``send()`` rather than two (see ``_Coalescing``).
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


class _Rejected(Exception):
    """Stops the parser once the connection has been answered and closed."""


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 60.0
    max_header_bytes: ClassVar[int] = 32 * 1024
    _watchdog: ClassVar[_Watchdog]

    _deadline: float | None = None
    """``loop.time()`` by which what is awaited (``_awaited``) must have arrived; None: nothing."""
    _awaited = ""
    _awaited_s = 0.0
    _head_bytes = 0
    _rejected = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._watchdog = _Watchdog(min(cls.header_timeout_s, cls.body_timeout_s))

    @classmethod
    def configured(
        cls, *, header_timeout_s: float, body_timeout_s: float, max_header_bytes: int
    ) -> type[GuardedHttpProtocol]:
        """A subclass with these limits: uvicorn takes a protocol class, not an instance."""
        return type(
            cls.__name__,
            (cls,),
            {
                "header_timeout_s": header_timeout_s,
                "body_timeout_s": body_timeout_s,
                "max_header_bytes": max_header_bytes,
            },
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Responses are written through this; flow control keeps the transport itself.
        self.transport = _Coalescing(transport, self.loop)  # type: ignore[assignment]
        self._arm(self.header_timeout_s, "request headers")
        self._watchdog.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline = None
        self._watchdog.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._rejected:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        # A pipelined or kept-alive request: its head gets the same time as the first one's.
        self._arm(self.header_timeout_s, "request headers")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF, as on the wire
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout_s, "the request body")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._deadline = None
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # httptools reports our own _Rejected as a parse error; the client has its answer.
        if not self._rejected:
            super().send_400_response(msg)

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
        """Called by the watchdog: answer 408 if what was awaited is late."""
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            seconds = (
                self.header_timeout_s if self._awaited == "request headers" else self.body_timeout_s
            )
            self._reject(408, f"{self._awaited} did not arrive within {seconds:g} s")

    def _reject(self, status: int, message: str) -> None:
        """Answer ``status`` and close; the ASGI app, if it was reading the body, sees a
        disconnect. A response the app already started is cut off instead (nothing better
        can be sent on that connection)."""
        self._deadline = None
        if self._rejected or self.transport.is_closing():
            return
        self._rejected = True
        if self.cycle is None or not self.cycle.response_started:
            body = message.encode()
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: text/plain; charset=utf-8\r\n",
                        b"content-length: %d\r\n" % len(body),
                        b"connection: close\r\n\r\n",
                        body,
                    ]
                )
            )
        self.logger.info("closed a connection from %s: %s", self.client, message)
        self.transport.close()


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

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            if len(data) > self.JOIN_BYTES:
                self._transport.write(data)
            else:
                self._held = bytes(data)
                self._loop.call_soon(self.flush)
            return
        self._held = None
        if len(data) > self.JOIN_BYTES:
            self._transport.write(held)
            self._transport.write(data)
        else:
            self._transport.write(held + data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():  # else the client is gone
            self._transport.write(held)

    def writelines(self, lines: Any) -> None:
        self.flush()
        self._transport.writelines(lines)

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
