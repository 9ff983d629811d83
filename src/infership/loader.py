"""Building a servable model version from the repository: runtime, checks, pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from pathlib import Path

from infership.errors import ConfigError
from infership.metrics import Metrics
from infership.model import ServedModel
from infership.processing.base import Postprocessor, Preprocessor
from infership.processing.classify import Classifier
from infership.processing.image import ImagePreprocessor
from infership.processing.python import PythonPostprocessor, PythonPreprocessor
from infership.processing.text import TextPreprocessor
from infership.repository import FilesystemRepository, ModelSource
from infership.repository.manifest import MANIFEST_NAME, Classification, TensorConfig
from infership.runtimes import Runtime, load_runtime
from infership.runtimes.gpu import register_gpu_metrics
from infership.runtimes.python import PythonRuntime
from infership.security.guard import ModelGuard
from infership.settings import ServerSettings
from infership.types import TensorSpec
from infership.usercode import CodeHost, load_code


class ModelLoader:
    """Turns a model folder into ``ServedModel`` objects (not yet started). Blocking: run it in a
    worker thread. Raises ModelNotFound, ConfigError (naming file and field) or ModelLoadError."""

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
        self._guard = ModelGuard(settings.model_security)
        # Models are what put work on GPUs, so their loader adds the GPU gauges, if any.
        register_gpu_metrics(metrics.registry)

    def prepare(self, name: str) -> ModelSource:
        with _files_named_by(self.repository.root / name / MANIFEST_NAME):
            source = self.repository.find(name)
            source.verify()
        return source

    def _load_runtime(self, source: ModelSource, version: int) -> Runtime:
        # The signature is checked before any byte of the version is read for execution.
        self._guard.check_signature(source, version)
        data = self._guard.read_artifact(source, version)
        # The torch and python runtimes read their own sections of the manifest.
        manifest = source.manifest
        options = manifest if manifest.runtime in ("torch", "python") else manifest.onnx
        runtime = load_runtime(manifest.runtime, source.artifact(version), options, data)
        try:
            _check_signature(source, runtime)
        except BaseException:
            _close(runtime, _code_of(runtime))
            raise
        return runtime

    def build(self, source: ModelSource, version: int) -> ServedModel:
        with _files_named_by(source.directory / MANIFEST_NAME):
            return self._build(source, version)

    def _build(self, source: ModelSource, version: int) -> ServedModel:
        runtime = self._load_runtime(source, version)
        code = _code_of(runtime)
        try:
            if code is None and source.manifest.python is not None:
                code = self._hooks(source, version)
            pre = self._preprocessors(source, version, runtime, code)
            post = self._postprocessors(source, runtime, code)
        except BaseException:
            _close(runtime, code)
            raise
        return ServedModel(
            source.name,
            version,
            source.manifest,
            runtime,
            metrics=self.metrics.model(source.name, str(version)),
            preprocess_executor=self._preprocess_executor,
            pre=pre,
            post=post,
            code=code,
        )

    def _hooks(self, source: ModelSource, version: int) -> CodeHost:
        """The class of ``python`` around an ONNX or torch model: hooks only."""
        config = source.manifest.python
        assert config is not None
        folder = source.artifact(version).parent
        label = f"model {source.name!r} version {version}"
        code = load_code(label, folder, config, None)
        if "predict" in code.methods:
            code.close()
            raise ConfigError(
                f"{source.directory / MANIFEST_NAME}: field 'python': {config.class_name} "
                f"defines predict, but runtime {source.manifest.runtime} computes the model; "
                "use runtime: python, or keep only preprocess and postprocess"
            )
        return code

    def _preprocessors(
        self, source: ModelSource, version: int, runtime: Runtime, code: CodeHost | None
    ) -> list[Preprocessor]:
        """The model's own preprocess first, then the built-in pipeline (image or text)."""
        manifest = source.manifest
        steps: list[Preprocessor] = []
        if code is not None and "preprocess" in code.methods:
            feeds = tuple(s.name for s in runtime.inputs)
            takes = _declared(manifest.python.inputs if manifest.python else None)
            takes = takes or code.signatures.get("preprocess_inputs") or runtime.inputs
            steps.append(PythonPreprocessor(code, takes, feeds))
        if manifest.preprocess.image is not None:
            steps.append(self._image(source, runtime))
        if manifest.preprocess.text is not None:
            steps.append(self._text(source, version, runtime))
        return steps

    def _postprocessors(
        self, source: ModelSource, runtime: Runtime, code: CodeHost | None
    ) -> list[Postprocessor]:
        """The built-in classification first, then the model's own postprocess."""
        manifest = source.manifest
        where = source.directory / MANIFEST_NAME
        steps: list[Postprocessor] = []
        if manifest.postprocess.classification is not None:
            config = manifest.postprocess.classification
            spec = _find(runtime.outputs, config.output, where, "postprocess.classification.output")
            steps.append(_classifier(source, config, spec.shape[-1]))
        if code is not None and "postprocess" in code.methods:
            reads = tuple(s.name for s in runtime.outputs)
            gives = _declared(manifest.python.outputs if manifest.python else None)
            gives = gives or code.signatures.get("postprocess_outputs") or runtime.outputs
            steps.append(PythonPostprocessor(code, reads, gives))
        return steps

    def _image(self, source: ModelSource, runtime: Runtime) -> ImagePreprocessor:
        config = source.manifest.preprocess.image
        assert config is not None
        where = source.directory / MANIFEST_NAME
        limits = self.settings.limits
        image = ImagePreprocessor(
            config,
            max_pixels=limits.max_image_pixels,
            max_side=limits.max_image_side,
            max_decode_bytes=limits.max_image_decode_bytes,
            max_images=limits.max_images_per_request,
        )
        spec = _find(runtime.inputs, config.input, where, "preprocess.image.input")
        if spec.datatype != "FP32" or not spec.accepts_shape((1, *image.sample_shape)):
            raise ConfigError(
                f"{where}: field 'preprocess.image': makes FP32 "
                f"{list(image.sample_shape)} images but input {spec.name!r} is "
                f"{spec.datatype} {list(spec.shape)}"
            )
        return image

    def _text(self, source: ModelSource, version: int, runtime: Runtime) -> TextPreprocessor:
        config = source.manifest.preprocess.text
        assert config is not None
        where = source.directory / MANIFEST_NAME
        # The tokenizer belongs to the version: a new version may change the vocabulary.
        text = TextPreprocessor(config, source.artifact(version).parent / config.tokenizer)
        for feed in text.feeds:
            spec = _find(runtime.inputs, feed, where, "preprocess.text")
            if spec.datatype != "INT64" or not spec.accepts_shape((1, 16)):
                raise ConfigError(
                    f"{where}: field 'preprocess.text': makes INT64 [batch, sequence] tokens but "
                    f"input {feed!r} is {spec.datatype} {list(spec.shape)}"
                )
        return text


def _declared(tensors: tuple[TensorConfig, ...] | None) -> tuple[TensorSpec, ...] | None:
    if tensors is None:
        return None
    return tuple(TensorSpec(t.name, t.datatype, t.shape) for t in tensors)


def _code_of(runtime: Runtime) -> CodeHost | None:
    return runtime.code if isinstance(runtime, PythonRuntime) else None


def _close(runtime: Runtime, code: CodeHost | None) -> None:
    runtime.close()
    if code is not None:
        code.close()


def _classifier(source: ModelSource, config: Classification, classes: int) -> Classifier:
    if config.labels is None:
        return Classifier(config, None, classes)
    labels = source.directory / config.labels
    where = f"{source.directory / MANIFEST_NAME}: field 'postprocess.classification.labels'"
    try:
        return Classifier(config, labels, classes)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where}: {labels} is not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start} ({exc.reason}); save it as UTF-8, one label per line"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {labels}: {exc.strerror}") from exc


@contextmanager
def _files_named_by(manifest: Path) -> Iterator[None]:
    """Turn what reading the model's files can raise, where a step has not named it more
    precisely, into a ConfigError naming the file: every file read at load comes from the
    model folder, so a file that cannot be read or decoded is the operator's to fix (a 4xx
    from the repository API), not a server failure."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{manifest}: a file of this model is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        path = exc.filename if exc.filename is not None else manifest.parent
        raise ConfigError(f"{manifest}: cannot read {path}: {exc.strerror}") from exc


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
            if d.datatype != real.datatype or not real.accepts_shape(d.shape):
                raise ConfigError(
                    f"{where}: field '{field}.{i}': declares {d.name} {d.datatype} "
                    f"{list(d.shape)} but the model has {real.datatype} {list(real.shape)}"
                )
