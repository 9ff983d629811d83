"""Every error infership raises, as one tree.

Grouped by who has to act. Transports map these classes to status codes in one table each
(``protocols/rest/errors.py`` for HTTP); nothing here knows about HTTP or gRPC.

    InfershipError
    ├── ClientError                  the caller sent something we cannot serve
    │   ├── InvalidRequest           malformed body, wrong shape/datatype, bad image, ...
    │   │   └── PayloadTooLarge      body, tensor or image over a configured limit
    │   ├── UnsupportedMediaType     a content type we cannot read
    │   ├── ModelNotFound            unknown model name
    │   │   └── VersionNotFound      known model, unknown or unloaded version
    │   ├── Unauthenticated          no credentials, or unknown or expired ones
    │   ├── Forbidden                switched off here, or the key lacks the scope
    │   ├── RateLimited              the caller's key is over its rate (carries retry_after_s)
    │   ├── RequestTimeout           the request arrived too slowly (head, body, or a stall)
    │   └── ClientDisconnected       the caller went away; its request was abandoned
    ├── CapacityError                the server is healthy but cannot take this request now
    │   ├── QueueFull                the model's queue is at its bound (carries retry_after_s)
    │   ├── DeadlineExceeded         the request's deadline passed before it was computed
    │   └── ModelNotReady            the model is loading, unloading or failed to load
    └── OperatorError                the deployment is wrong; fix the config or the model
        ├── ConfigError              model.yaml / settings invalid (names file and field)
        │   ├── DigestMismatch       an artifact's sha256 differs from the recorded one
        │   ├── SignatureInvalid     a version folder is unsigned or differs from its signature
        │   └── DecryptionFailed     an encrypted model file: no matching key, or modified
        ├── ModelLoadError           the runtime could not load or warm the model
        ├── InferenceFailed          the runtime raised while computing a batch
        │   └── ModelCodeFailed      the model's own Python raised or broke its contract
        ├── OptimizeFailed           `infership optimize` could not rewrite the model
        │   └── AccuracyCheckFailed  the rewrite strays from the original; nothing written
        ├── BuildError               no container engine, or the engine failed to build or push
        └── DeployError              the cluster refused, or could not be reached (kubeconfig, API)
            ├── RolloutFailed        the new pods never became ready (carries the reasons)
            └── CanaryFailed         the canary did worse than the stable version; rolled back
"""

from __future__ import annotations


class InfershipError(Exception):
    """Root of every error raised by infership."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ClientError(InfershipError):
    """The request cannot be served as sent; retrying it unchanged will fail again."""


class InvalidRequest(ClientError):
    """The body, a tensor, or an image is malformed or does not fit the model."""


class PayloadTooLarge(InvalidRequest):
    """A body, tensor, batch or image is over a configured limit."""


class UnsupportedMediaType(ClientError):
    """The request's content type is not one this endpoint reads."""


class ModelNotFound(ClientError):
    """No model of that name is in the repository."""


class VersionNotFound(ModelNotFound):
    """The model exists but the requested version is not served."""


class Unauthenticated(ClientError):
    """The request carries no credentials, or ones the server does not accept."""


class Forbidden(ClientError):
    """The operation is switched off by the server's settings, or the caller's key lacks the
    scope it needs."""


class RateLimited(ClientError):
    """The caller is over its request rate. ``retry_after_s`` says when a token is free."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTimeout(ClientError):
    """The request arrived too slowly: its head or body missed its deadline, or its body
    stalled while holding memory others were waiting for."""


class ClientDisconnected(ClientError):
    """The caller closed the connection before the answer; the work was cancelled."""


class CapacityError(InfershipError):
    """The server is healthy but cannot take this request now; a retry may succeed."""


class QueueFull(CapacityError):
    """The model's queue is at its bound. ``retry_after_s`` is a hint for clients."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(CapacityError):
    """The request's deadline passed before it could be computed; it was not computed."""


class ModelNotReady(CapacityError):
    """The model is known but not (yet, or no longer) able to serve."""


class OperatorError(InfershipError):
    """The deployment itself is wrong: configuration, model files or runtime."""


class ConfigError(OperatorError):
    """A configuration file or setting is invalid. The message names the file and the field."""


class DigestMismatch(ConfigError):
    """An artifact's sha256 does not match the digest recorded in model.yaml."""


class SignatureInvalid(ConfigError):
    """A model version is unsigned, or its files differ from what its signature covers."""


class DecryptionFailed(ConfigError):
    """An encrypted model file has no matching key, or was modified, truncated or renamed."""


class ModelLoadError(OperatorError):
    """The runtime could not load or warm up a model."""


class InferenceFailed(OperatorError):
    """The runtime raised while computing a batch."""


class ModelCodeFailed(InferenceFailed):
    """The model's own Python code raised, or returned what it did not declare. The message
    names the model and the problem and is safe to send (it never holds the exception's text
    or traceback, which go to the server's log)."""


class OptimizeFailed(OperatorError):
    """onnxruntime could not rewrite the model."""


class AccuracyCheckFailed(OptimizeFailed):
    """The rewritten model strays from the original beyond the allowed bounds; not written."""


class ImportFailed(OperatorError):
    """A model could not be imported: its framework is not installed, it cannot be exported
    (the message names the layer, transform or setting), or the repository refuses it.
    Nothing is written."""


class ParityFailed(ImportFailed):
    """The servable model's answers differ from the original's beyond the tolerance. The
    message names the output and by how much; nothing is written."""


class BuildError(OperatorError):
    """No container engine was found, or it failed to build or push an image."""


class DeployError(OperatorError):
    """A Kubernetes operation failed: no kubeconfig, an unreachable or refusing API server, or
    an API (such as a CRD) that the cluster does not serve. The message says what to do."""


class RolloutFailed(DeployError):
    """A Deployment did not become ready in time. ``reasons`` lists what the pods and events
    said (ImagePullBackOff, CrashLoopBackOff, ProgressDeadlineExceeded, timeout, ...)."""

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = list(reasons or [])


class CanaryFailed(DeployError):
    """The canary's error rate or latency was worse than allowed, so it was rolled back."""
