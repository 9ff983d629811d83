"""A served model version: signature checks, pre-processing, batching scheduler, post-processing.

This is where a transport-neutral ``InferenceRequest`` becomes rows for the runtime and back. The
public signature of a model with an image pipeline takes encoded images (BYTES) and answers
labels and probabilities; the model's own tensors are accepted and can be requested too, so one
protocol call serves raw tensors and images alike.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, cast

import numpy as np

from infership.batching.scheduler import BatchScheduler
from infership.errors import InvalidRequest, PayloadTooLarge
from infership.metrics import ModelMetrics
from infership.parameters import timeout_us
from infership.processing.classify import Classifier
from infership.processing.image import ImagePreprocessor
from infership.processing.text import TextPreprocessor
from infership.repository.manifest import ModelManifest
from infership.runtimes.base import Runtime
from infership.types import (
    Array,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    TensorSpec,
    datatype_of,
    numpy_dtype,
)


class ServedModel:
    """One loaded, schedulable model version. Create with ``ServedModel(...)``, then ``start()``."""

    def __init__(
        self,
        name: str,
        version: int,
        manifest: ModelManifest,
        runtime: Runtime,
        *,
        metrics: ModelMetrics,
        preprocess_executor: Executor,
        preprocessor: ImagePreprocessor | None = None,
        classifier: Classifier | None = None,
        max_images: int = 64,
        text: TextPreprocessor | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.manifest = manifest
        self.runtime = runtime
        self.metrics = metrics
        self.preprocessor = preprocessor
        self.classifier = classifier
        self.max_images = max_images
        self.text = text
        self._preprocess_executor = preprocess_executor
        policy = manifest.batching
        self._compute_executor = ThreadPoolExecutor(
            max_workers=policy.parallel_executions, thread_name_prefix=f"infer-{name}"
        )
        self.scheduler = BatchScheduler(
            f"{name}:{version}", runtime.infer, policy, self._compute_executor, observer=metrics
        )
        self._model_inputs = {spec.name: spec for spec in runtime.inputs}
        self._model_outputs = {spec.name: spec for spec in runtime.outputs}
        self.inputs = self._public_inputs()
        self.outputs = (classifier.outputs if classifier else ()) + runtime.outputs
        self._classifier_outputs = (
            frozenset(s.name for s in classifier.outputs) if classifier else frozenset()
        )
        self._default_outputs = tuple(
            s.name for s in (classifier.outputs if classifier else runtime.outputs)
        )
        self._output_names = frozenset(s.name for s in self.outputs)

    def _public_inputs(self) -> tuple[TensorSpec, ...]:
        specs = list(self.runtime.inputs)
        if self.preprocessor is not None:
            fed = self.preprocessor.config.input
            image = TensorSpec(self.preprocessor.config.public_input, "BYTES", (-1,))
            specs = [image if s.name == fed else s for s in specs]
        if self.text is not None:
            # The texts take the place of the first token tensor; the others are derived.
            feeds = self.text.feeds
            texts = TensorSpec(self.text.config.public_input, "BYTES", (-1,))
            specs = [texts if s.name == feeds[0] else s for s in specs if s.name not in feeds[1:]]
        return tuple(specs)

    async def start(self) -> None:
        await self.scheduler.start()
        if self.manifest.warmup:
            await self._warm_up()

    async def stop(self, *, drain: bool = True) -> None:
        await self.scheduler.stop(drain=drain)
        self._compute_executor.shutdown(wait=True)
        self.runtime.close()

    async def _warm_up(self) -> None:
        # First runs allocate memory arenas and pick kernels; do it before reporting ready, at
        # batch 1 and at the largest batch, so the first real requests are not slow.
        for rows in sorted({1, self.manifest.batching.max_batch_size}):
            batch = {s.name: _zeros(s, rows) for s in self.runtime.inputs}
            await self.scheduler.submit(batch)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [str(self.version)],
            "platform": self.runtime.platform,
            "inputs": [_describe(s) for s in self.inputs],
            "outputs": [_describe(s) for s in self.outputs],
        }

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Check the request against the signature, then compute it through the scheduler."""
        deadline = _deadline(request)
        wanted = self._requested_outputs(request)
        with self.scheduler.reserve() as admission:  # refused before decoding, not after
            batch = await self._model_batch(request)
        results = await self.scheduler.submit(batch, deadline, admission=admission)
        outputs: dict[str, Array] = {}
        if self.classifier is not None and not self._classifier_outputs.isdisjoint(wanted):
            started = time.perf_counter()
            outputs.update(self.classifier(results[self.classifier.config.output]))
            self.metrics.postprocess_seconds.observe(time.perf_counter() - started)
        outputs.update(results)
        return InferenceResponse(
            model_name=self.name,
            model_version=str(self.version),
            outputs={name: outputs[name] for name in wanted},
        )

    def classification_request(
        self, images: list[bytes]
    ) -> tuple[InferenceRequest, tuple[str, str, str]]:
        """A request classifying encoded images, and its (label, probability, index) outputs."""
        if self.preprocessor is None or self.classifier is None:
            raise InvalidRequest(
                f"model {self.name!r} has no image classification pipeline; use /infer"
            )
        c = self.classifier.config
        names = (c.label_output, c.probability_output, c.index_output)
        request = InferenceRequest(
            inputs={self.preprocessor.config.public_input: np.array(images, dtype=object)},
            outputs=tuple(RequestedOutput(n) for n in names),
        )
        return request, names

    def classification_top_k(self, top_k: int | None) -> int:
        """``top_k`` checked against what the model computes (all of it when None)."""
        limit = self.classifier.top_k if self.classifier else 0
        if top_k is None:
            return limit
        if not 1 <= top_k <= limit:
            raise InvalidRequest(f"top_k must be from 1 to {limit} for model {self.name!r}")
        return top_k

    def _requested_outputs(self, request: InferenceRequest) -> tuple[str, ...]:
        if request.outputs is None:
            return self._default_outputs
        names = tuple(o.name for o in request.outputs)
        for name in names:
            if name not in self._output_names:
                raise InvalidRequest(
                    f"model {self.name!r} has no output {name!r}; outputs are "
                    f"{sorted(self._output_names)}"
                )
        return names

    async def _model_batch(self, request: InferenceRequest) -> dict[str, Array]:
        """Map public inputs to model inputs, checking names, datatypes and shapes."""
        inputs = dict(request.inputs)
        image_name = self.preprocessor.config.public_input if self.preprocessor else None
        if image_name is not None and image_name in inputs:
            assert self.preprocessor is not None
            fed = self.preprocessor.config.input
            if fed in inputs:
                raise InvalidRequest(
                    f"send either {image_name!r} (encoded images) or {fed!r} (a tensor), not both"
                )
            inputs[fed] = await self._preprocess(inputs.pop(image_name))
        text_name = self.text.config.public_input if self.text else None
        if text_name is not None and text_name in inputs:
            inputs.update(await self._tokenise(inputs.pop(text_name), inputs))
        if inputs.keys() != self._model_inputs.keys():
            self._name_the_wrong_input(inputs, image_name or text_name)
        rows = {_check(spec, inputs[spec.name]) for spec in self._model_inputs.values()}
        if len(rows) > 1:
            raise InvalidRequest(f"inputs disagree on the batch size: {sorted(rows)}")
        return inputs

    def _name_the_wrong_input(self, inputs: dict[str, Array], public_name: str | None) -> None:
        expected = set(self._model_inputs)
        extra = sorted(set(inputs) - expected - ({public_name} if public_name else set()))
        if extra:
            raise InvalidRequest(
                f"model {self.name!r} has no input {extra[0]!r}; inputs are "
                f"{sorted(s.name for s in self.inputs)}"
            )
        missing = sorted(expected - set(inputs))
        if missing:
            public = {s.name for s in self.inputs}
            name = missing[0] if missing[0] in public else public_name
            raise InvalidRequest(f"model {self.name!r} needs input {name!r}, which is missing")

    async def _preprocess(self, images: Array) -> Array:
        assert self.preprocessor is not None
        name = self.preprocessor.config.public_input
        if images.dtype != object:
            raise InvalidRequest(f"input {name!r} must be BYTES (encoded images)")
        flat = images.reshape(-1)
        if images.ndim not in (1, 2) or (images.ndim == 2 and images.shape[1] != 1):
            raise InvalidRequest(
                f"input {name!r} must have shape [n] or [n, 1], got {list(images.shape)}"
            )
        if len(flat) == 0:
            raise InvalidRequest(f"input {name!r} holds no images")
        # Refuse before decoding: the batch limit is known and decoding is the costly part.
        limit = min(self.max_images, self.manifest.batching.max_batch_size)
        if len(flat) > limit:
            raise PayloadTooLarge(
                f"input {name!r} holds {len(flat)} images; model {self.name!r} takes at most "
                f"{limit} per request"
            )
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        tensor = await loop.run_in_executor(
            self._preprocess_executor, self.preprocessor.batch, cast(list[bytes], flat.tolist())
        )
        self.metrics.preprocess_seconds.observe(time.perf_counter() - started)
        return tensor

    async def _tokenise(self, texts: Array, given: dict[str, Array]) -> dict[str, Array]:
        assert self.text is not None
        name = self.text.config.public_input
        clash = [feed for feed in self.text.feeds if feed in given]
        if clash:
            raise InvalidRequest(f"send either {name!r} (texts) or {clash[0]!r}, not both")
        if texts.dtype != object:
            raise InvalidRequest(f"input {name!r} must be BYTES (UTF-8 strings)")
        if texts.ndim not in (1, 2) or (texts.ndim == 2 and texts.shape[1] != 1):
            raise InvalidRequest(
                f"input {name!r} must have shape [n] or [n, 1], got {list(texts.shape)}"
            )
        flat = texts.reshape(-1)
        if len(flat) == 0:
            raise InvalidRequest(f"input {name!r} holds no texts")
        limit = self.manifest.batching.max_batch_size
        if len(flat) > limit:
            raise PayloadTooLarge(
                f"input {name!r} holds {len(flat)} texts; model {self.name!r} takes at most "
                f"{limit} per request"
            )
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        tokens = await loop.run_in_executor(
            self._preprocess_executor, self.text.batch, cast(list[bytes], flat.tolist())
        )
        self.metrics.preprocess_seconds.observe(time.perf_counter() - started)
        return tokens


def _check(spec: TensorSpec, array: Array) -> int:
    datatype = datatype_of(array)
    if datatype != spec.datatype:
        raise InvalidRequest(f"input {spec.name!r} must be {spec.datatype}, got {datatype}")
    if not spec.accepts_shape(array.shape):
        raise InvalidRequest(
            f"input {spec.name!r} has shape {list(array.shape)}; the model expects "
            f"{list(spec.shape)} (-1 = any size)"
        )
    return int(array.shape[0]) if array.ndim else 1


def _deadline(request: InferenceRequest) -> float | None:
    timeout = timeout_us(request.parameters)
    return None if timeout is None else time.monotonic() + timeout / 1e6


def _zeros(spec: TensorSpec, rows: int) -> Array:
    shape = (rows, *(d if d > 0 else 1 for d in spec.shape[1:]))
    if spec.datatype == "BYTES":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=numpy_dtype(spec.datatype))


def _describe(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
