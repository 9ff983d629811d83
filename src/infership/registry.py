"""The models this server runs, by name and version: loading, readiness and unloading."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import StrEnum

from infership.errors import (
    ConfigError,
    InfershipError,
    ModelNotFound,
    ModelNotReady,
    VersionNotFound,
)
from infership.metrics import Metrics
from infership.model import ServedModel
from infership.processing.classify import Classifier
from infership.processing.image import ImagePreprocessor
from infership.repository import FilesystemRepository, ModelSource
from infership.repository.manifest import MANIFEST_NAME
from infership.runtimes import Runtime, load_runtime
from infership.settings import ServerSettings
from infership.types import TensorSpec

log = logging.getLogger(__name__)


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class ModelStatus:
    name: str
    version: int | None
    state: ModelState
    reason: str = ""


class ModelRegistry:
    """Loads models from a repository and hands out ready versions to the data plane."""

    def __init__(
        self,
        repository: FilesystemRepository,
        settings: ServerSettings,
        metrics: Metrics,
        preprocess_executor: Executor,
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        self._preprocess_executor = preprocess_executor
        self._served: dict[str, dict[int, ServedModel]] = {}
        self._status: dict[str, list[ModelStatus]] = {}
        self._lock = asyncio.Lock()
        # Fixed at start-up, then changed only by load/unload: a folder appearing in the
        # repository later must not make a running server unready.
        self._expected: list[str] = list(settings.models) or repository.names()

    def names(self) -> list[str]:
        """Models this server means to serve: those configured, plus loaded, minus unloaded."""
        return list(self._expected)

    async def load(self, name: str) -> None:
        """Load (or reload) every selected version of ``name``, warm it, then swap it in.

        The new versions are ready before the old ones stop, and the old ones finish what they
        had queued. Raises ModelNotFound, ConfigError or ModelLoadError.
        """
        if not self.repository.exists(name):
            raise ModelNotFound(f"model {name!r} is not in the repository {self.repository.root}")
        async with self._lock:
            old = self._served.get(name, {})
            if not old:
                self._status[name] = [ModelStatus(name, None, ModelState.LOADING)]
            try:
                loaded = await self._load_versions(name)
            except InfershipError as exc:
                if old:  # the versions already serving keep serving; say why the reload failed
                    for status in self._status[name]:
                        status.reason = f"reload failed: {exc}"
                else:
                    self._status[name] = [ModelStatus(name, None, ModelState.UNAVAILABLE, str(exc))]
                raise
            self._served[name] = {m.version: m for m in loaded}
            self._status[name] = [ModelStatus(name, m.version, ModelState.READY) for m in loaded]
            if name not in self._expected:
                self._expected.append(name)
            for model in loaded:
                model.metrics.ready.set(1)
        await self._retire(old.values())

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` after its queued requests finish."""
        async with self._lock:
            if name not in self._served and name not in self._status:
                raise ModelNotFound(f"model {name!r} is not loaded")
            old = self._served.pop(name, {})
            if name in self._expected:
                self._expected.remove(name)
            self._status[name] = [
                ModelStatus(name, v, ModelState.UNAVAILABLE, "unloaded") for v in sorted(old)
            ] or [ModelStatus(name, None, ModelState.UNAVAILABLE, "unloaded")]
        await self._retire(old.values())

    async def stop(self) -> None:
        """Drain and stop every model."""
        for name in list(self._served):
            await self._retire(self._served.pop(name).values())

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The served version (newest when ``version`` is None). Raises for unknown or unready."""
        versions = self._served.get(name)
        if not versions:
            statuses = self._status.get(name)
            if statuses is None:
                raise ModelNotFound(
                    f"unknown model {name!r}; served models: {sorted(self._served)}"
                )
            status = statuses[0]
            detail = f": {status.reason}" if status.reason else ""
            raise ModelNotReady(f"model {name!r} is {status.state.lower()}{detail}")
        if version is None or version == "":
            return versions[max(versions)]
        number = (
            int(version) if version.isascii() and version.isdigit() and len(version) < 19 else 0
        )
        if number not in versions:
            shown = version if len(version) <= 20 else version[:20] + "..."
            raise VersionNotFound(
                f"model {name!r} has no version {shown!r}; served versions: {sorted(versions)}"
            )
        return versions[number]

    def versions(self, name: str) -> list[int]:
        return sorted(self._served.get(name, {}))

    @property
    def ready(self) -> bool:
        """True when every model it means to serve has a version serving (and there is one)."""
        # A server left with no model at all should not receive traffic.
        return bool(self._expected) and all(self._served.get(n) for n in self._expected)

    def index(self) -> list[ModelStatus]:
        listed = [s for statuses in self._status.values() for s in statuses]
        known = set(self._status)
        listed += [
            ModelStatus(n, None, ModelState.UNAVAILABLE, "not loaded")
            for n in self.repository.names()
            if n not in known
        ]
        return sorted(listed, key=lambda s: (s.name, s.version or 0))

    async def _load_versions(self, name: str) -> list[ServedModel]:
        loop = asyncio.get_running_loop()
        source = await loop.run_in_executor(None, self._prepare, name)
        models = []
        try:
            for version in source.versions:
                runtime = await loop.run_in_executor(None, self._load_runtime, source, version)
                model = self._assemble(source, version, runtime)
                models.append(model)
                await model.start()
        except BaseException:
            for model in models:
                await model.stop(drain=False)
            raise
        return models

    def _prepare(self, name: str) -> ModelSource:
        source = self.repository.find(name)
        source.verify()
        return source

    def _load_runtime(self, source: ModelSource, version: int) -> Runtime:
        runtime = load_runtime(
            source.manifest.runtime, source.artifact(version), source.manifest.onnx
        )
        _check_signature(source, runtime)
        return runtime

    def _assemble(self, source: ModelSource, version: int, runtime: Runtime) -> ServedModel:
        manifest = source.manifest
        where = source.directory / MANIFEST_NAME
        preprocessor = classifier = None
        if manifest.preprocess.image is not None:
            config = manifest.preprocess.image
            preprocessor = ImagePreprocessor(
                config, max_pixels=self.settings.limits.max_image_pixels
            )
            spec = _find(runtime.inputs, config.input, where, "preprocess.image.input")
            if spec.datatype != "FP32" or not spec.accepts_shape((1, *preprocessor.sample_shape)):
                raise ConfigError(
                    f"{where}: field 'preprocess.image': makes FP32 "
                    f"{list(preprocessor.sample_shape)} images but input {spec.name!r} is "
                    f"{spec.datatype} {list(spec.shape)}"
                )
        if manifest.postprocess.classification is not None:
            config_c = manifest.postprocess.classification
            spec = _find(
                runtime.outputs, config_c.output, where, "postprocess.classification.output"
            )
            labels = source.directory / config_c.labels if config_c.labels else None
            classifier = Classifier(config_c, labels, spec.shape[-1])
        return ServedModel(
            source.name,
            version,
            manifest,
            runtime,
            metrics=self.metrics.model(source.name, str(version)),
            preprocess_executor=self._preprocess_executor,
            preprocessor=preprocessor,
            classifier=classifier,
            max_images=self.settings.limits.max_images_per_request,
        )

    async def _retire(self, models: Iterable[ServedModel]) -> None:
        for model in list(models):
            if model.version not in self._served.get(model.name, {}):
                model.metrics.ready.set(0)
            await model.stop(drain=True)
            log.info("stopped %s version %s", model.name, model.version)


def _find(specs: tuple[TensorSpec, ...], name: str, where: object, field: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise ConfigError(
        f"{where}: field '{field}': the model has no tensor {name!r}; it has "
        f"{[s.name for s in specs]}"
    )


def _check_signature(source: ModelSource, runtime: Runtime) -> None:
    """Declared inputs/outputs in model.yaml must match what the model file says."""
    where = source.directory / MANIFEST_NAME
    for field, declared, actual in (
        ("inputs", source.manifest.inputs, runtime.inputs),
        ("outputs", source.manifest.outputs, runtime.outputs),
    ):
        if declared is None:
            continue
        by_name = {s.name: s for s in actual}
        if {d.name for d in declared} != set(by_name):
            raise ConfigError(
                f"{where}: field '{field}': declares {sorted(d.name for d in declared)} but the "
                f"model has {sorted(by_name)}"
            )
        for i, d in enumerate(declared):
            real = by_name[d.name]
            shapes_fit = len(d.shape) == len(real.shape) and all(
                r < 0 or r == w for r, w in zip(real.shape, d.shape, strict=True)
            )
            if d.datatype != real.datatype or not shapes_fit:
                raise ConfigError(
                    f"{where}: field '{field}.{i}': declares {d.name} {d.datatype} "
                    f"{list(d.shape)} but the model has {real.datatype} {list(real.shape)}"
                )
