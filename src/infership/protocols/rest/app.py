"""The REST application: the route table and the one place errors become responses."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from infership import web
from infership.auth.policy import Access, AccessPolicy, bearer_token
from infership.dataplane import DataPlane
from infership.errors import InfershipError
from infership.metrics import Metrics
from infership.observability.access import RequestContextMiddleware
from infership.observability.tracing import Tracing
from infership.protocols.rest import routes
from infership.protocols.rest.body import BodyBudget
from infership.protocols.rest.errors import headers_for, status_for
from infership.settings import ServerSettings

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    response = routes.json_response({"error": message}, status)
    response.headers.update(headers or {})
    return response


def _guard(endpoint: Endpoint, route: str, access: Access) -> Endpoint:
    """Admit the caller for ``access`` (key, scope, rate), turn our errors into
    ``{"error": ...}`` answers (anything else is a logged 500), and count and time every
    answer by route template and status."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        started = time.perf_counter()
        response = await _answer(endpoint, request, access)
        metrics: Metrics = request.app.state.metrics
        labels = (request.method, route, str(response.status_code))
        metrics.http_requests.labels(*labels).inc()
        metrics.http_request_seconds.labels(*labels).observe(time.perf_counter() - started)
        if request.app.state.dataplane.draining:
            # Kept-alive clients reconnect, and so reach a server that is not going away.
            response.headers["connection"] = "close"
        if _closes_after(request, response):
            await _discard_unread_body(request)
        return response

    return guarded


def _closes_after(request: Request, response: Response) -> bool:
    """Whether the connection is closed once this response is sent."""
    tokens = f"{request.headers.get('connection', '')},{response.headers.get('connection', '')}"
    return "close" in tokens.lower() or request.scope.get("http_version") == "1.0"


async def _discard_unread_body(request: Request) -> None:
    """Read what is left of the request body and drop it (up to ``max_body_bytes``).

    Refusals are answered before the body is read (``DataPlane.admit``). On a kept-alive
    connection the server skips the rest of the body as it arrives; but closing a socket with
    unread data sends a TCP reset, which makes the client discard the answer it has not read
    yet: it would see "connection reset" instead of our 503 and its Retry-After. So before a
    close, the body is read first, as web servers do with a lingering close."""
    settings: ServerSettings = request.app.state.settings
    left = settings.http.max_body_bytes
    try:
        async for chunk in request.stream():
            left -= len(chunk)
            if left < 0:
                return  # over the limit: the client was refused for that; no more reading
    except (ClientDisconnect, RuntimeError):  # gone, or the body was already consumed
        return


async def _answer(endpoint: Endpoint, request: Request, access: Access) -> Response:
    try:
        policy: AccessPolicy = request.app.state.policy
        token = bearer_token(request.headers.get("authorization"))
        policy.admit(access, token, request.client.host if request.client else None)
        return await endpoint(request)
    except InfershipError as exc:
        status = status_for(exc)
        if status != 500:
            return _error(exc.message, status, headers_for(exc))
        # Operator errors carry paths and library messages: log them, don't send them.
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _error(f"{type(exc).__name__}: the server failed; see its log", status)
    except Exception:
        log.exception("%s %s failed unexpectedly", request.method, request.url.path)
        return _error("internal server error; see the server log", 500)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(str(exc.detail), exc.status_code, dict(exc.headers or {}))


def _routes() -> list[Route]:
    get, post = ["GET"], ["POST"]
    table: list[tuple[str, Endpoint, list[str], Access]] = [
        ("/", routes.index, get, Access.PUBLIC),
        ("/v2", routes.server_metadata, get, Access.INFER),
        ("/v2/health/live", routes.live, get, Access.HEALTH),
        ("/v2/health/ready", routes.ready, get, Access.HEALTH),
        ("/v2/models/{name}", routes.model_metadata, get, Access.INFER),
        ("/v2/models/{name}/ready", routes.model_ready, get, Access.HEALTH),
        ("/v2/models/{name}/infer", routes.infer, post, Access.INFER),
        ("/v2/models/{name}/predict", routes.predict, post, Access.INFER),
        ("/v2/models/{name}/versions/{version}", routes.model_metadata, get, Access.INFER),
        ("/v2/models/{name}/versions/{version}/ready", routes.model_ready, get, Access.HEALTH),
        ("/v2/models/{name}/versions/{version}/infer", routes.infer, post, Access.INFER),
        ("/v2/models/{name}/versions/{version}/predict", routes.predict, post, Access.INFER),
        ("/v2/repository/index", routes.repository_index, post, Access.ADMIN),
        ("/v2/repository/models/{name}/load", routes.load_model, post, Access.ADMIN),
        ("/v2/repository/models/{name}/unload", routes.unload_model, post, Access.ADMIN),
        ("/predict", routes.predict, post, Access.INFER),
        ("/metrics", routes.metrics, get, Access.METRICS),
        ("/openapi.json", routes.openapi, get, Access.PUBLIC),
    ]
    return [
        Route(path, _guard(fn, path, access), methods=methods)
        for path, fn, methods, access in table
    ]


def _middleware(settings: ServerSettings) -> list[Middleware]:
    observability = settings.observability
    tracing = Tracing.if_configured() if observability.tracing else None
    return [
        Middleware(RequestContextMiddleware, access_log=observability.access_log, tracing=tracing)
    ]


def create_rest_app(
    dataplane: DataPlane,
    settings: ServerSettings,
    metrics: Metrics,
    policy: AccessPolicy | None = None,
) -> Starlette:
    """The ASGI app for the Open Inference Protocol over REST, plus uploads and metrics.
    ``policy`` defaults to one built from ``settings.auth``."""
    page: list[BaseRoute] = web.routes() if settings.observability.web_page else []
    app = Starlette(
        routes=[*_routes(), *page],
        middleware=_middleware(settings),
        exception_handlers={HTTPException: _http_error},
    )
    app.state.dataplane = dataplane
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.policy = policy or AccessPolicy(settings.auth)
    app.state.body_budget = BodyBudget(settings.http.body_memory_bytes)
    return app
