"""A served model version: signature checks, pre-processing, batching scheduler, post-processing.

This is where a transport-neutral ``InferenceRequest`` becomes rows for the runtime and back,
through the processing steps of ``processing/base.py``, whatever they are. The public signature
is the runtime's with each step's inputs and outputs in place of what it makes and reads (an
image pipeline takes encoded images and answers labels); the model's own tensors are accepted
and can be requested too, so one protocol call serves raw tensors and images alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np

from infership.batching.scheduler import INLINE_BELOW_S, BatchScheduler
from infership.errors import InvalidRequest
from infership.metrics import ModelMetrics
from infership.parameters import timeout_us
from infership.processing.base import Postprocessor, Preprocessor
from infership.processing.classify import Classifier
from infership.processing.image import ImagePreprocessor
from infership.repository.manifest import ModelManifest
from infership.runtimes.base import Runtime
from infership.types import (
    Array,
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    TensorSpec,
    check_input,
    numpy_dtype,
)
from infership.usercode import CodeHost


class ServedModel:
    """One loaded, schedulable model version. Create with ``ServedModel(...)``, then ``start()``.

    ``pre`` and ``post`` are its processing steps (``processing/base.py``), in order; ``code``
    is the host of its own Python, if any, closed with the model."""

    def __init__(
        self,
        name: str,
        version: int,
        manifest: ModelManifest,
        runtime: Runtime,
        *,
        metrics: ModelMetrics,
        preprocess_executor: Executor,
        pre: Sequence[Preprocessor] = (),
        post: Sequence[Postprocessor] = (),
        code: CodeHost | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.manifest = manifest
        self.runtime = runtime
        self.metrics = metrics
        self.pre = tuple(pre)
        self.post = tuple(post)
        self._code = code
        self._preprocess_executor = preprocess_executor
        # Worker processes compute batches side by side: one compute thread each, at least.
        executions = max(manifest.batching.parallel_executions, runtime.concurrency)
        policy = manifest.batching.model_copy(update={"parallel_executions": executions})
        self._compute_executor = ThreadPoolExecutor(
            max_workers=executions, thread_name_prefix=f"infer-{name}"
        )
        compute = self._postprocessed if self.post else runtime.infer
        self.scheduler = BatchScheduler(
            f"{name}:{version}",
            compute,
            policy,
            self._compute_executor,
            observer=metrics,
            # The model's own code never runs on the event loop, however fast it is.
            inline_below_s=0.0 if code is not None else INLINE_BELOW_S,
        )
        self._model_inputs = {spec.name: spec for spec in runtime.inputs}
        self.inputs = self._public_inputs()
        self.outputs = self._public_outputs()
        self._default_outputs = tuple(
            s.name for s in (self.post[-1].gives if self.post else runtime.outputs)
        )
        self._output_names = frozenset(s.name for s in self.outputs)
        self._max_rows = manifest.batching.max_batch_size

    def _public_inputs(self) -> tuple[TensorSpec, ...]:
        specs = list(self.runtime.inputs)
        for step in self.pre:
            # What a step takes stands where its first feed stood; its other feeds are derived.
            at = next((i for i, s in enumerate(specs) if s.name in step.feeds), len(specs))
            kept = [s for s in specs if s.name not in step.feeds]
            taken = [t for t in step.takes if t.name not in {s.name for s in kept}]
            at = min(at, len(kept))
            specs = kept[:at] + taken + kept[at:]
        return tuple(specs)

    def _public_outputs(self) -> tuple[TensorSpec, ...]:
        given = tuple(spec for step in self.post for spec in step.gives)
        hidden = any(step.hides_model_outputs for step in self.post)
        return given if hidden else given + self.runtime.outputs

    async def start(self) -> None:
        await self.scheduler.start()
        if self.manifest.warmup and self.manifest.runtime != "python":
            await self._warm_up()

    async def stop(self, *, drain: bool = True) -> None:
        await self.scheduler.stop(drain=drain)
        self._compute_executor.shutdown(wait=True)
        self.runtime.close()
        if self._code is not None:
            self._code.close()

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
        outputs = await self.scheduler.submit(batch, deadline, admission=admission)
        return InferenceResponse(
            model_name=self.name,
            model_version=str(self.version),
            outputs={name: outputs[name] for name in wanted},
        )

    def _postprocessed(self, batch: dict[str, Array]) -> dict[str, Array]:
        """The runtime, then the post-processing steps, on one batch (a compute thread)."""
        outputs = self.runtime.infer(batch)
        started = time.perf_counter()
        for step in self.post:
            outputs.update(step(outputs))
        self.metrics.postprocess_seconds.observe(time.perf_counter() - started)
        return outputs

    def classification_request(
        self, images: list[bytes]
    ) -> tuple[InferenceRequest, tuple[str, str, str]]:
        """A request classifying encoded images, and its (label, probability, index) outputs."""
        image = next((p for p in self.pre if isinstance(p, ImagePreprocessor)), None)
        classifier = self._classifier()
        if image is None or classifier is None:
            raise InvalidRequest(
                f"model {self.name!r} has no image classification pipeline; use /infer"
            )
        c = classifier.config
        names = (c.label_output, c.probability_output, c.index_output)
        request = InferenceRequest(
            inputs={image.config.public_input: np.array(images, dtype=object)},
            outputs=tuple(RequestedOutput(n) for n in names),
        )
        return request, names

    def classification_top_k(self, top_k: int | None) -> int:
        """``top_k`` checked against what the model computes (all of it when None)."""
        classifier = self._classifier()
        limit = classifier.top_k if classifier else 0
        if top_k is None:
            return limit
        if not 1 <= top_k <= limit:
            raise InvalidRequest(f"top_k must be from 1 to {limit} for model {self.name!r}")
        return top_k

    def _classifier(self) -> Classifier | None:
        return next((p for p in self.post if isinstance(p, Classifier)), None)

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
        """Map public inputs to model inputs through the pre-processing steps, then check
        names, datatypes and shapes against the model's."""
        inputs = dict(request.inputs)
        ran: list[Preprocessor] = []
        for step in self.pre:
            given = {t.name: inputs[t.name] for t in step.takes if t.name in inputs}
            if not given:
                continue  # the client sent the model inputs themselves
            clash = [f for f in step.feeds if f in inputs and f not in given]
            if clash:
                raise InvalidRequest(
                    f"send either {next(iter(given))!r} or {clash[0]!r} (the model input it"
                    " makes), not both"
                )
            step.check(given, self._max_rows, f"model {self.name!r}")
            for name in given:
                del inputs[name]
            inputs.update(await self._run_step(step, given))
            ran.append(step)
        if inputs.keys() != self._model_inputs.keys():
            self._name_the_wrong_input(inputs, ran)
        rows = {check_input(spec, inputs[spec.name]) for spec in self._model_inputs.values()}
        if len(rows) > 1:
            raise InvalidRequest(f"inputs disagree on the batch size: {sorted(rows)}")
        return inputs

    async def _run_step(self, step: Preprocessor, given: dict[str, Array]) -> dict[str, Array]:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        made = await loop.run_in_executor(self._preprocess_executor, step, given)
        self.metrics.preprocess_seconds.observe(time.perf_counter() - started)
        return made

    def _name_the_wrong_input(self, inputs: dict[str, Array], ran: list[Preprocessor]) -> None:
        expected = set(self._model_inputs)
        public = {s.name for s in self.inputs}
        extra = sorted(set(inputs) - expected)
        if extra:
            raise InvalidRequest(
                f"model {self.name!r} has no input {extra[0]!r}; inputs are "
                f"{sorted(s.name for s in self.inputs)}"
            )
        missing = sorted(expected - set(inputs))
        if missing:
            made_by = [step for step in self.pre if missing[0] in step.feeds]
            if missing[0] in public or not made_by:
                name = missing[0]
            elif made_by[0] in ran:  # a step ran but did not make it: the step's fault
                raise InvalidRequest(
                    f"model {self.name!r}: pre-processing did not make input {missing[0]!r}"
                )
            else:
                name = made_by[0].takes[0].name
            raise InvalidRequest(f"model {self.name!r} needs input {name!r}, which is missing")


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
