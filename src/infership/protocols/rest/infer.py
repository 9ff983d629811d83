"""``POST /v2/models/{name}[/versions/{version}]/infer`` as plain ASGI, in front of the router.

This is the route every Open Inference Protocol client calls for every tensor, so on a fast
model the server's own cost per request is what clients measure. Routed through Starlette (its
router, exception middleware, a ``Request``/``Response`` pair, ``app.state`` lookups) it cost
158 µs per request in-process on the trivial benchmark model, of which the model took 35; with
this path and the changes that came with it, 63 (docs/benchmarking.md, "Where the time goes").
It answers as the routed endpoints do: same access rules, errors, metrics, drain and lingering
close, through the functions they share.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import NamedTuple

from starlette.types import ASGIApp, Receive, Scope, Send

from infership.auth.policy import Access, AccessPolicy, bearer_token
from infership.dataplane import DataPlane
from infership.metrics import Metrics
from infership.protocols.rest.body import (
    BodyBudget,
    closes_after,
    content_length,
    drain,
)
from infership.protocols.rest.codec import (
    compress_body,
    decode_infer_request,
    encode_infer_response,
    is_identity,
)
from infership.protocols.rest.errors import error_answer
from infership.protocols.rest.routes import until_disconnected
from infership.settings import ServerSettings
from infership.types import InferenceRequest

INLINE_DECODE_BYTES = 256 * 1024
"""Bodies this large or larger are decoded in a worker thread (``decode_executor``): parsing a
large JSON tensor takes milliseconds per megabyte, which the event loop must not spend."""


class RouteTemplate(NamedTuple):
    """What the access log and tracing read from ``scope["route"]``, as Starlette's routes."""

    path: str


_NOT_POST = {"Allow": "POST", "Content-Type": "application/json"}
_BY_VERSION = RouteTemplate("/v2/models/{name}/versions/{version}/infer")
_LATEST = RouteTemplate("/v2/models/{name}/infer")


def infer_target(path: str) -> tuple[RouteTemplate, str, str | None] | None:
    """The route, model name and version of an infer path, or None for any other path.

    >>> infer_target("/v2/models/add/versions/2/infer")
    (RouteTemplate(path='/v2/models/{name}/versions/{version}/infer'), 'add', '2')
    >>> infer_target("/v2/models//infer") is None
    True
    """
    if not path.endswith("/infer"):
        return None
    parts = path.split("/")  # "", "v2", "models", name, ["versions", version,] "infer"
    if parts[1:3] != ["v2", "models"] or not all(parts[3:-1]):
        return None
    if len(parts) == 5:
        return _LATEST, parts[3], None
    if len(parts) == 7 and parts[4] == "versions":
        return _BY_VERSION, parts[3], parts[5]
    return None


class InferEndpoint:
    """ASGI middleware: answers infer paths itself and passes everything else to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        dataplane: DataPlane,
        settings: ServerSettings,
        metrics: Metrics,
        policy: AccessPolicy,
        budget: BodyBudget,
        decode_executor: Executor | None = None,
    ) -> None:
        self.app = app
        self._plane = dataplane
        self._metrics = metrics
        self._policy = policy
        self._budget = budget
        self._decode_executor = decode_executor
        self._max_body_bytes = settings.http.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = infer_target(scope["path"]) if scope["type"] == "http" else None
        if target is None:
            await self.app(scope, receive, send)
            return
        route, name, version = target
        scope["route"] = route
        if scope["method"] != "POST":
            # Not counted: the method is the client's free text, a metrics label is not.
            await _send(send, 405, b'{"error":"method not allowed; use POST"}', _NOT_POST)
            return
        started = time.perf_counter()
        headers = request_headers(scope["headers"])
        received = False  # else what is left of the body is read before a close (body.drain)
        try:
            client = scope.get("client")
            self._policy.admit(
                Access.INFER, bearer_token(_text(headers.get("authorization"))),
                client[0] if client else None,
            )  # fmt: skip
            self._plane.admit(name, version)
            declared = content_length(headers.get("content-length"))
            encoding = _text(headers.get("content-encoding"))
            reading = self._budget.read(
                receive, self._max_body_bytes, declared, encoded=not is_identity(encoding)
            )
            async with reading as body:
                received = True
                decode = functools.partial(
                    decode_infer_request,
                    body,
                    header_length=_text(headers.get("inference-header-content-length")),
                    content_encoding=encoding,
                    max_body_bytes=self._max_body_bytes,
                )
                small = len(body) < INLINE_DECODE_BYTES
                inference = decode() if small else await self._decode_in_thread(decode)
                del body, decode  # a JSON body is several times its tensor: free it first
            result = await until_disconnected(receive, self._plane.infer(name, version, inference))
            payload, answer = encode_infer_response(result, inference)
            payload, encoding = compress_body(payload, _text(headers.get("accept-encoding")))
            if encoding is not None:
                answer["Content-Encoding"] = encoding
            status = 200
        except Exception as exc:  # every failure is an answer: see error_answer
            status, payload, answer = error_answer(exc, "POST", scope["path"])
        self._metrics.http_answered("POST", route.path, status, time.perf_counter() - started)
        if self._plane.draining:
            # Kept-alive clients reconnect, and so reach a server that is not going away.
            answer["Connection"] = "close"
        if not received and closes_after(
            _text(headers.get("connection")), answer, scope.get("http_version")
        ):
            await drain(receive, self._max_body_bytes)
        await _send(send, status, payload, answer)

    async def _decode_in_thread(self, decode: Callable[[], InferenceRequest]) -> InferenceRequest:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._decode_executor, decode)


async def _send(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [
        (key.lower().encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()
    ]
    raw.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def request_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, bytes]:
    """Header values by (lower-case) name; a repeated header's values joined by ", ".

    RFC 9110 (5.3) makes a repeated field the comma-joined list of its values. Keeping only
    the last (a dict built from the list) or only the first (Starlette's ``get``) would let a
    proxy that reads the other one see a different request: a second
    ``Inference-Header-Content-Length`` moved the boundary between JSON and binary tensors.
    Joined, a repeated singleton is refused as the malformed value it is.

    >>> request_headers([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    {'a': b'1, 3', 'b': b'2'}
    """
    headers: dict[str, bytes] = {}
    for key, value in raw:
        name = key.decode("latin-1")
        seen = headers.get(name)
        headers[name] = value if seen is None else seen + b", " + value
    return headers


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
