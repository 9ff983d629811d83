"""Our errors → HTTP status codes, in one table, looked up along the class hierarchy."""

from __future__ import annotations

import logging
import math

from infership import errors
from infership.observability.ids import REQUEST_ID
from infership.protocols.rest.codec import encode_json

log = logging.getLogger(__name__)

STATUS: dict[type[Exception], int] = {
    errors.InvalidRequest: 400,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.ModelNotFound: 404,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.RateLimited: 429,
    errors.RequestTimeout: 408,
    errors.ClientDisconnected: 499,  # nginx's "client closed request"; nobody reads it
    errors.QueueFull: 503,
    errors.ModelNotReady: 503,
    errors.DeadlineExceeded: 504,
    # Failures of the repository load API: the model the caller asked for cannot be loaded.
    errors.ConfigError: 400,
    errors.ModelLoadError: 400,
    errors.InfershipError: 500,
}


def status_for(exc: Exception) -> int:
    """The HTTP status for ``exc``: the entry of its nearest class in ``STATUS``, else 500."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def headers_for(exc: Exception) -> dict[str, str]:
    """Extra headers: Retry-After (whole seconds, at least 1) when a retry can succeed later,
    and the challenge RFC 6750 asks for with a 401."""
    if isinstance(exc, errors.Unauthenticated):
        return {"WWW-Authenticate": 'Bearer realm="infership"'}
    if isinstance(exc, errors.QueueFull | errors.RateLimited):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    if isinstance(exc, errors.ModelNotReady):
        return {"Retry-After": "1"}
    return {}


def error_answer(exc: Exception, method: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    """The status, ``{"error": ...}`` body and headers answering ``exc``.

    Our errors say what the client got wrong, and are sent as they are. Operator errors (500)
    carry paths and library messages: they are logged, not sent. Anything else is a bug: logged
    with its traceback, answered as a plain 500."""
    if isinstance(exc, errors.InfershipError):
        status = status_for(exc)
        if status != 500:
            return status, _body(exc.message), {**_json(), **headers_for(exc)}
        log.error("%s %s failed: %s", method, path, exc)
        # A model's own code failing is named (never with its exception's text); the rest of
        # what the server says about its failures is for its log.
        if isinstance(exc, errors.ModelCodeFailed):
            return (
                status,
                _body(f"{exc.message} ({_for_request()}details in the server log)"),
                _json(),
            )
        said = f"{type(exc).__name__}: the server failed; see its log"
        return status, _body(f"{said} ({_for_request()}details in the server log)"), _json()
    log.error("%s %s failed unexpectedly", method, path, exc_info=exc)
    return 500, _body(f"internal server error ({_for_request()}details in the server log)"), _json()


def _for_request() -> str:
    request_id = REQUEST_ID.get()
    return "" if request_id is None else f"request id {request_id}; "


def _body(message: str) -> bytes:
    return encode_json({"error": message})


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}  # a new dict: callers add headers to it
