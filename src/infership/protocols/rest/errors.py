"""Our errors → HTTP status codes, in one table, looked up along the class hierarchy."""

from __future__ import annotations

import math

from infership import errors

STATUS: dict[type[Exception], int] = {
    errors.InvalidRequest: 400,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.ModelNotFound: 404,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.RateLimited: 429,
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
