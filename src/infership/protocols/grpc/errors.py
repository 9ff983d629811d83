"""Our errors → gRPC status codes, in one table, looked up along the class hierarchy.

A client mistake never maps to UNKNOWN. UNAVAILABLE is kept for conditions a retry can clear
(kserve's gRPC client retries it three times), never for an unknown model.
"""

from __future__ import annotations

import math

import grpc

from infership import errors

Metadata = tuple[tuple[str, str], ...]

STATUS: dict[type[Exception], grpc.StatusCode] = {
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.UnsupportedMediaType: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Forbidden: grpc.StatusCode.PERMISSION_DENIED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ClientDisconnected: grpc.StatusCode.CANCELLED,
    errors.QueueFull: grpc.StatusCode.UNAVAILABLE,
    errors.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    # Failures of the repository load API: the model the caller asked for cannot be loaded.
    errors.ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelLoadError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InfershipError: grpc.StatusCode.INTERNAL,
}

RETRY_AFTER = "retry-after"
"""Trailing metadata key with a retry hint in whole seconds, as HTTP's Retry-After header."""


MAX_DETAILS_BYTES = 2048
"""Longest status message sent, in UTF-8 bytes. Messages quote what the client sent (model,
input and parameter names), and a status message travels in a trailer, percent-encoded: past
the client's metadata limit (8 KiB soft, 16 KiB hard by default) the client would get
RESOURCE_EXHAUSTED "Stream removed" instead of our status."""


def details_for(message: str) -> str:
    """``message`` clipped to :data:`MAX_DETAILS_BYTES`, saying how much was left out."""
    encoded = message.encode()
    if len(encoded) <= MAX_DETAILS_BYTES:
        return message
    kept = encoded[:MAX_DETAILS_BYTES].decode(errors="ignore")
    return f"{kept}... ({len(encoded) - len(kept.encode())} more bytes)"


def status_for(exc: Exception) -> grpc.StatusCode:
    """The status code for ``exc``: the entry of its nearest class in ``STATUS``, else INTERNAL."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


def trailers_for(exc: Exception) -> Metadata:
    """Trailing metadata for ``exc``: a ``retry-after`` hint when a retry can succeed later."""
    if isinstance(exc, errors.QueueFull | errors.RateLimited):
        return ((RETRY_AFTER, str(max(1, math.ceil(exc.retry_after_s)))),)
    if isinstance(exc, errors.ModelNotReady):
        return ((RETRY_AFTER, "1"),)
    return ()
