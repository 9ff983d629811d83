"""The REST application: the route table, every endpoint guarded (access, errors, metrics), and
the infer route answering in front of the router."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from infership import web
from infership.auth.policy import Access, AccessPolicy, bearer_token
from infership.dataplane import DataPlane
from infership.metrics import Metrics
from infership.observability.access import RequestContextMiddleware
from infership.observability.tracing import Tracing
from infership.protocols.rest import routes
from infership.protocols.rest.body import BodyBudget, closes_after, discard_unread
from infership.protocols.rest.errors import error_answer
from infership.protocols.rest.infer import InferEndpoint
from infership.settings import ServerSettings

Endpoint = Callable[[Request], Awaitable[Response]]


def _guard(endpoint: Endpoint, route: str, access: Access) -> Endpoint:
    """Admit the caller for ``access`` (key, scope, rate), turn every failure into an answer
    (``errors.error_answer``), and count and time every answer by route template and status."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        started = time.perf_counter()
        try:
            policy: AccessPolicy = request.app.state.policy
            # Every value: a repeated Authorization is refused (as in infer.request_headers).
            authorization = ", ".join(request.headers.getlist("authorization")) or None
            token = bearer_token(authorization)
            policy.admit(access, token, request.client.host if request.client else None)
            response = await endpoint(request)
        except Exception as exc:
            status, body, headers = error_answer(exc, request.method, request.url.path)
            response = Response(body, status, headers)
        metrics: Metrics = request.app.state.metrics
        metrics.http_answered(
            request.method, route, response.status_code, time.perf_counter() - started
        )
        if request.app.state.dataplane.draining:
            # Kept-alive clients reconnect, and so reach a server that is not going away.
            response.headers["connection"] = "close"
        connection = request.headers.get("connection")
        if closes_after(connection, response.headers, request.scope.get("http_version")):
            settings: ServerSettings = request.app.state.settings
            await discard_unread(request, settings.http.max_body_bytes)
        return response

    return guarded


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = routes.json_response({"error": str(exc.detail)}, exc.status_code)
    response.headers.update(exc.headers or {})
    return response


def _routes() -> list[Route]:
    get, post = ["GET"], ["POST"]
    table: list[tuple[str, Endpoint, list[str], Access]] = [
        ("/", routes.index, get, Access.PUBLIC),
        ("/v2", routes.server_metadata, get, Access.INFER),
        ("/v2/health/live", routes.live, get, Access.HEALTH),
        ("/v2/health/ready", routes.ready, get, Access.HEALTH),
        ("/v2/models/{name}", routes.model_metadata, get, Access.INFER),
        ("/v2/models/{name}/ready", routes.model_ready, get, Access.HEALTH),
        ("/v2/models/{name}/predict", routes.predict, post, Access.INFER),
        ("/v2/models/{name}/versions/{version}", routes.model_metadata, get, Access.INFER),
        ("/v2/models/{name}/versions/{version}/ready", routes.model_ready, get, Access.HEALTH),
        ("/v2/models/{name}/versions/{version}/predict", routes.predict, post, Access.INFER),
        ("/v2/repository/index", routes.repository_index, post, Access.ADMIN),
        ("/v2/repository/models/{name}/load", routes.load_model, post, Access.ADMIN),
        ("/v2/repository/models/{name}/unload", routes.unload_model, post, Access.ADMIN),
        ("/predict", routes.predict, post, Access.INFER),
        # TF Serving / KServe v1 (docs/v1-protocol.md). ":predict" routes before the others:
        # a model name never holds "/", but the status route's {name} would take "add:predict".
        ("/v1/models/{name}:predict", routes.v1_predict, post, Access.INFER),
        ("/v1/models/{name}/versions/{version}:predict", routes.v1_predict, post, Access.INFER),
        ("/v1/models/{name}:{verb}", routes.v1_unsupported, post, Access.INFER),
        ("/v1/models/{name}/versions/{version}:{verb}", routes.v1_unsupported, post, Access.INFER),
        ("/v1/models", routes.v1_models, get, Access.INFER),
        ("/v1/models/{name}", routes.v1_model_status, get, Access.INFER),
        ("/v1/models/{name}/versions/{version}", routes.v1_model_status, get, Access.INFER),
        ("/v1/models/{name}/metadata", routes.v1_model_metadata, get, Access.INFER),
        (
            "/v1/models/{name}/versions/{version}/metadata",
            routes.v1_model_metadata,
            get,
            Access.INFER,
        ),
        ("/metrics", routes.metrics, get, Access.METRICS),
        ("/openapi.json", routes.openapi, get, Access.PUBLIC),
    ]
    return [
        Route(path, _guard(fn, path, access), methods=methods)
        for path, fn, methods, access in table
    ]


def _middleware(
    dataplane: DataPlane,
    settings: ServerSettings,
    metrics: Metrics,
    policy: AccessPolicy,
    budget: BodyBudget,
    decode_executor: Executor | None,
) -> list[Middleware]:
    observability = settings.observability
    tracing = Tracing.if_configured() if observability.tracing else None
    return [
        Middleware(RequestContextMiddleware, access_log=observability.access_log, tracing=tracing),
        # The infer route answers in front of the router (see infer.py); the request id, the
        # access log and tracing still wrap it.
        Middleware(
            InferEndpoint,
            dataplane=dataplane,
            settings=settings,
            metrics=metrics,
            policy=policy,
            budget=budget,
            decode_executor=decode_executor,
        ),
    ]


def create_rest_app(
    dataplane: DataPlane,
    settings: ServerSettings,
    metrics: Metrics,
    policy: AccessPolicy | None = None,
    decode_executor: Executor | None = None,
) -> Starlette:
    """The ASGI app for the Open Inference Protocol over REST, plus uploads and metrics.
    ``policy`` defaults to one built from ``settings.auth``; large bodies are decoded in
    ``decode_executor`` (default: asyncio's)."""
    page: list[BaseRoute] = web.routes() if settings.observability.web_page else []
    policy = policy or AccessPolicy(settings.auth)
    budget = BodyBudget(settings.http.body_memory_bytes, min_rate=settings.http.body_min_rate)
    app = Starlette(
        routes=[*_routes(), *page],
        middleware=_middleware(dataplane, settings, metrics, policy, budget, decode_executor),
        exception_handlers={HTTPException: _http_error},
    )
    app.state.dataplane = dataplane
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.policy = policy
    app.state.body_budget = budget
    app.state.decode_executor = decode_executor  # v1 predict parses large bodies there
    return app
