"""Transport-neutral operations of the Open Inference Protocol.

REST (and later gRPC) adapters parse the wire format, call one method here, and encode what it
returns. Nothing here knows a status code or a content type.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, NamedTuple

from infership import __version__
from infership.errors import (
    CapacityError,
    ClientError,
    Forbidden,
    InfershipError,
    ModelNotReady,
)
from infership.model import ServedModel
from infership.registry import ModelRegistry
from infership.types import InferenceRequest, InferenceResponse

EXTENSIONS = ("binary_tensor_data", "model_repository")


class Prediction(NamedTuple):
    label: str
    probability: float
    class_index: int


class Classified(NamedTuple):
    """Answer of ``DataPlane.classify``: one list of top-k predictions per image."""

    model_name: str
    model_version: str
    predictions: list[list[Prediction]]


class DataPlane:
    """What every transport can ask of the server."""

    def __init__(self, registry: ModelRegistry, *, model_control: bool = False) -> None:
        self.registry = registry
        self.model_control = model_control
        self.live = True
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.live and not self.draining and self.registry.ready

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "infership", "version": __version__, "extensions": list(EXTENSIONS)}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        model = self.registry.get(name, version)
        metadata = model.metadata()
        if version is None:
            metadata["versions"] = [str(v) for v in self.registry.versions(name)]
        return metadata

    def model_ready(self, name: str, version: str | None = None) -> bool:
        try:
            self.registry.get(name, version)
        except CapacityError:
            return False
        return True

    def admit(self, name: str, version: str | None = None) -> None:
        """Refuse a request now, before its body is read and parsed, with the error ``infer``
        would raise: unknown or unready model (ModelNotFound, ModelNotReady) or no capacity
        (QueueFull). Under overload most requests are refused; this keeps each refusal to
        microseconds of the event loop instead of a body upload and a multipart parse."""
        model = self.registry.get(name, version)
        try:
            model.scheduler.check_capacity(unprepared=True)
        except InfershipError as exc:
            model.metrics.outcome(_outcome(exc))
            raise

    async def infer(
        self, name: str, version: str | None, request: InferenceRequest
    ) -> InferenceResponse:
        """Run one request; errors are InfershipError subclasses, counted by outcome."""
        return await self._infer(self.registry.get(name, version), version, request)

    async def classify(
        self, name: str, version: str | None, images: list[bytes], top_k: int | None = None
    ) -> Classified:
        """Top-k classes of encoded images, through the model's image pipeline."""
        model = self.registry.get(name, version)
        request, outputs = model.classification_request(images)
        k = model.classification_top_k(top_k)
        response = await self._infer(model, version, request)
        labels, probabilities, indices = (response.outputs[n] for n in outputs)
        predictions = [
            [
                Prediction(labels[i, j].decode(), float(probabilities[i, j]), int(indices[i, j]))
                for j in range(k)
            ]
            for i in range(len(images))
        ]
        return Classified(response.model_name, response.model_version, predictions)

    async def _infer(
        self, model: ServedModel, version: str | None, request: InferenceRequest
    ) -> InferenceResponse:
        name = model.name
        metrics = model.metrics
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            try:
                response = await model.infer(request)
            except ModelNotReady:
                # A reload swapped versions while this request was being prepared: the old
                # version stopped taking requests, the new one is ready. Send it there, once.
                successor = self.registry.get(name, version)
                if successor is model:
                    raise
                response = await successor.infer(request)
        except InfershipError as exc:
            metrics.outcome(_outcome(exc))
            raise
        except asyncio.CancelledError:
            metrics.outcome("cancelled")  # the caller went away; not the server's fault
            raise
        except BaseException:
            metrics.outcome("server_error")
            raise
        finally:
            metrics.in_flight.dec()
        metrics.request_seconds.observe(time.perf_counter() - started)
        metrics.outcome("success")
        return response

    def repository_index(self) -> list[dict[str, Any]]:
        entries = []
        for status in self.registry.index():
            entry: dict[str, Any] = {"name": status.name, "state": status.state.value}
            if status.version is not None:
                entry["version"] = str(status.version)
            if status.reason:
                entry["reason"] = status.reason
            entries.append(entry)
        return entries

    async def load_model(self, name: str) -> None:
        self._check_model_control()
        await self.registry.load(name)

    async def unload_model(self, name: str) -> None:
        self._check_model_control()
        await self.registry.unload(name)

    def _check_model_control(self) -> None:
        if not self.model_control:
            raise Forbidden(
                "the model repository API is disabled; start the server with --model-control "
                "to load and unload models at run time"
            )


def _outcome(exc: InfershipError) -> str:
    if isinstance(exc, ClientError):
        return "client_error"
    if isinstance(exc, CapacityError):
        return "capacity_error"
    return "server_error"
