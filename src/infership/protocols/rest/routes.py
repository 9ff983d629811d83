"""REST endpoints: parse the request, call the data plane, encode the answer. Nothing else.

The infer route, the hottest, is plain ASGI in ``infer.py``; the v1 (TF Serving / KServe v1)
bodies are translated by ``v1.py``."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable
from concurrent.futures import Executor
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from infership import web
from infership.dataplane import DataPlane
from infership.errors import (
    ClientDisconnected,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from infership.protocols.rest import v1
from infership.protocols.rest.body import BodyBudget, content_length, read_body
from infership.protocols.rest.codec import encode_json, is_identity
from infership.protocols.rest.openapi import OPENAPI
from infership.settings import ServerSettings

T = TypeVar("T")
JSON = "application/json"  # exactly this: kserve's client drops messages for "...; charset=utf-8"


def json_response(content: Any, status: int = 200) -> Response:
    return Response(encode_json(content), status_code=status, media_type=JSON)


def _plane(request: Request) -> DataPlane:
    plane: DataPlane = request.app.state.dataplane
    return plane


def _settings(request: Request) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def _budget(request: Request) -> BodyBudget:
    budget: BodyBudget = request.app.state.body_budget
    return budget


def _version(request: Request) -> str | None:
    version: str | None = request.path_params.get("version")
    return version


async def until_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it, so a request whose
    caller gave up leaves the queue instead of being computed. Call after the body is read.

    Raises ClientDisconnected in that case; a cancellation from elsewhere (shutdown) stays a
    CancelledError.
    """
    # Per request this must stay cheap: a fast model answers without ``work`` ever suspending,
    # and then no watcher is started at all (the call_soon below is cancelled unrun). Once it
    # suspends, one watcher task cancels *this* task on a disconnect, rather than ``work``
    # running in a task of its own beside it.
    task = asyncio.current_task()
    assert task is not None, "until_disconnected runs inside a task"
    watch = _DisconnectWatch(receive, task)
    start = asyncio.get_running_loop().call_soon(watch.start)
    try:
        return await work
    except asyncio.CancelledError:
        if watch.fired and task.uncancel() == 0:
            raise ClientDisconnected(
                "the client closed the connection; the request was cancelled"
            ) from None
        raise
    finally:
        start.cancel()
        watch.stop()


class _DisconnectWatch:
    """Cancels ``task`` when the client goes away; see until_disconnected."""

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self._receive = receive
        self._task = task
        self._watcher: asyncio.Task[None] | None = None
        self.fired = False

    def start(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        # Once the body is read, the server's receive() only returns when the client goes away.
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.fired = True
        self._task.cancel()


async def live(request: Request) -> Response:
    ok = _plane(request).live
    return json_response({"live": ok}, 200 if ok else 503)


async def ready(request: Request) -> Response:
    ok = _plane(request).ready
    return json_response({"ready": ok}, 200 if ok else 503)


async def server_metadata(request: Request) -> Response:
    return json_response(_plane(request).server_metadata())


async def model_ready(request: Request) -> Response:
    name = request.path_params["name"]
    ok = _plane(request).model_ready(name, _version(request))
    return json_response({"name": name, "ready": ok}, 200 if ok else 503)


async def model_metadata(request: Request) -> Response:
    return json_response(
        _plane(request).model_metadata(request.path_params["name"], _version(request))
    )


async def predict(request: Request) -> Response:
    """Classic upload: ``curl -F img=@cat.jpg`` or a raw ``image/*`` body → top-k as JSON."""
    plane = _plane(request)
    name = request.path_params.get("name") or _default_model(plane)
    plane.admit(name, _version(request))
    reading = _budget(request).read(
        request.receive,
        _settings(request).http.max_body_bytes,
        content_length(request.headers.get("content-length")),
    )
    async with reading as body:
        request._body = body  # how Starlette knows the stream is read, and what form() parses
        images, filenames = await _uploaded_images(request, body)
    top_k = _top_k(request.query_params.get("top_k"))
    result = await until_disconnected(
        request.receive, plane.classify(name, _version(request), images, top_k)
    )
    predictions = [
        {"filename": filename, "top_k": [c._asdict() for c in classes]}
        for filename, classes in zip(filenames, result.predictions, strict=True)
    ]
    return json_response(
        {
            "model_name": result.model_name,
            "model_version": result.model_version,
            "predictions": predictions,
        }
    )


def _top_k(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) < 6):
        raise InvalidRequest("query parameter top_k must be a positive integer")
    return int(raw)


def _default_model(plane: DataPlane) -> str:
    names = plane.registry.names()
    if len(names) != 1:
        raise InvalidRequest(
            f"this server has {len(names)} models; use /v2/models/<name>/predict, one of {names}"
        )
    return names[0]


async def _uploaded_images(request: Request, body: bytes) -> tuple[list[bytes], list[str | None]]:
    settings = _settings(request)
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media.startswith("image/") or media == "application/octet-stream":
        if not body:
            raise InvalidRequest("empty request body; send an image")
        return [body], [None]
    if media != "multipart/form-data":
        raise UnsupportedMediaType(
            f"content type {content_type or '(none)'!r} is not an image upload; send "
            "multipart/form-data (curl -F img=@cat.jpg) or an image/* body"
        )
    limit = settings.limits.max_images_per_request
    try:
        form = await request.form(max_files=limit, max_fields=limit)
    except Exception as exc:  # starlette raises its own HTTPException / MultiPartException
        detail = str(getattr(exc, "detail", exc))
        if detail.startswith("Too many"):
            raise PayloadTooLarge(f"multipart body: {detail}; the limit is {limit}") from exc
        raise InvalidRequest(f"malformed multipart body: {detail}") from exc
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise InvalidRequest("the multipart body holds no file; send one with -F img=@cat.jpg")
        images = [await f.read() for f in files]
        return images, [f.filename for f in files]
    finally:
        await form.close()


async def repository_index(request: Request) -> Response:
    """Triton's index request: ``{}`` or ``{"ready": true}`` (only models that are READY)."""
    body = await _repository_request(request, keys={"ready"})
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidRequest(f"'ready' must be true or false, got {json.dumps(ready)[:40]}")
    entries = _plane(request).repository_index()
    if ready:
        entries = [entry for entry in entries if entry["state"] == "READY"]
    return json_response(entries)


async def load_model(request: Request) -> Response:
    """Triton's load request: ``{}``. Its ``parameters`` (``config``, ``file:...``) override the
    model's files; refused as gRPC refuses them, for they come from the repository only."""
    parameters = await _repository_parameters(request)
    if parameters:
        raise InvalidRequest(
            f"load parameters are not supported ({', '.join(sorted(parameters))}); the model's"
            " files and model.yaml come from the repository"
        )
    await _plane(request).load_model(request.path_params["name"])
    return json_response({"name": request.path_params["name"], "load": True})


async def unload_model(request: Request) -> Response:
    """Triton's unload request; tritonclient always sends ``unload_dependents`` (there are no
    dependents here). Other parameters are refused, as gRPC refuses them."""
    parameters = await _repository_parameters(request)
    unknown = sorted(set(parameters) - {"unload_dependents"})
    if unknown:
        raise InvalidRequest(f"unload parameters are not supported ({', '.join(unknown)})")
    if not isinstance(parameters.get("unload_dependents", False), bool):
        raise InvalidRequest("parameter 'unload_dependents' must be true or false")
    await _plane(request).unload_model(request.path_params["name"])
    return json_response({"name": request.path_params["name"], "unload": True})


_REPOSITORY_BODY_LIMIT = 64 * 1024
"""Repository requests carry a few parameters; a larger body is refused (413)."""


async def _repository_parameters(request: Request) -> dict[str, Any]:
    """The ``parameters`` object of a load or unload request ({} when absent)."""
    body = await _repository_request(request, keys={"parameters"})
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidRequest("'parameters' must be a JSON object")
    return parameters


async def _repository_request(request: Request, keys: set[str]) -> dict[str, Any]:
    """The body of a repository request as a JSON object; an empty body is ``{}`` (curl -X
    POST). Anything else, or a key not in ``keys``, is a 400 saying so."""
    body = await read_body(request, _REPOSITORY_BODY_LIMIT)
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: [[[[... nested too deeply
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 or too deep"
        raise InvalidRequest(f"the request body is not valid JSON: {reason}") from exc
    if not isinstance(doc, dict):
        kind = "null" if doc is None else "an array" if isinstance(doc, list) else "a scalar"
        raise InvalidRequest(f"the request body must be a JSON object such as {{}}, got {kind}")
    unknown = sorted(set(doc) - keys)
    if unknown:
        shown = ", ".join(repr(key[:40]) for key in unknown[:5])
        raise InvalidRequest(f"unknown key(s) {shown} in the request body; known: {sorted(keys)}")
    return doc


# --- the v1 protocol (TF Serving / KServe v1) ----------------------------------------------

V1_INLINE_DECODE_BYTES = 64 * 1024
"""v1 bodies this large or larger are parsed in the decode thread, as ``infer.py`` does with
bodies four times larger: a v1 body is read value by value against the signature (b64, rows of
objects), up to twice v2's time per byte, and the event loop must not spend over ~25 ms."""


async def v1_models(request: Request) -> Response:
    """KServe v1's model list: ``{"models": [...]}``."""
    return json_response({"models": _plane(request).registry.names()})


async def v1_model_status(request: Request) -> Response:
    """TF Serving's model status, with KServe v1's ``name`` and ``ready`` beside it."""
    index = _plane(request).repository_index()
    return json_response(v1.model_status(request.path_params["name"], _version(request), index))


async def v1_model_metadata(request: Request) -> Response:
    """TF Serving's model metadata: the public signature as ``serving_default``."""
    metadata = _plane(request).model_metadata(request.path_params["name"], _version(request))
    return json_response(v1.model_metadata(metadata))


async def v1_predict(request: Request) -> Response:
    """``:predict`` with ``instances`` or ``inputs``, through the same admission, body budget,
    batching and metrics as ``/infer``."""
    plane = _plane(request)
    name, version = request.path_params["name"], _version(request)
    plane.admit(name, version)
    inputs = v1.signature(plane.model_metadata(name, version))
    encoding = request.headers.get("content-encoding")
    if not is_identity(encoding):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported on v1 predict; send the JSON as is"
        )
    reading = _budget(request).read(
        request.receive,
        _settings(request).http.max_body_bytes,
        content_length(request.headers.get("content-length")),
    )
    async with reading as body:
        request._body = body  # the stream is read: nothing to discard before a close
        decode = functools.partial(v1.decode_predict, body, inputs)
        if len(body) < V1_INLINE_DECODE_BYTES:
            prediction = decode()
        else:
            executor: Executor | None = request.app.state.decode_executor
            prediction = await asyncio.get_running_loop().run_in_executor(executor, decode)
        del body, decode  # a JSON body is several times its tensor: free it first
    result = await until_disconnected(
        request.receive, plane.infer(name, version, prediction.request)
    )
    return Response(v1.encode_predict(result, prediction.format), media_type=JSON)


async def v1_unsupported(request: Request) -> Response:
    """TF Serving's ``:classify`` and ``:regress`` and KServe's ``:explain``: not served."""
    verb = request.path_params["verb"][:40]
    raise InvalidRequest(
        f"the v1 protocol here serves only ':predict', not {':' + verb!r} (classify and regress"
        " take tf.Example inputs, which no model here has)"
    )


async def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return json_response(OPENAPI)


async def index(request: Request) -> Response:
    """The web page for browsers (``Accept: text/html``); a JSON summary for everyone else."""
    if _settings(request).observability.web_page and web.wants_page(request):
        return await web.page(request)
    plane = _plane(request)
    return json_response(
        {
            "name": "infership",
            "status": "alive",  # what KServe's v1 liveness check (GET /) reads
            "models": plane.registry.names(),
            "ready": plane.ready,
            "docs": {"openapi": "/openapi.json", "metrics": "/metrics", "predict": "/predict"},
        }
    )
