"""``infership build`` as a library call: check the models, write the context, run the engine.

    result = build_image(BuildOptions(Path("models"), tag="localhost/classifier:1"))

Render (context.py), write (``write_context``) and execute (engine.py) are separate steps, so
``--context-only`` stops after the second.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement

from infership.errors import ConfigError
from infership.image import engine as engines
from infership.image import wheelhouse
from infership.image.context import (
    CPU_BASE_IMAGE,
    GPU_BASE_IMAGE,
    ImageSpec,
    ModelInfo,
    check_reference,
    render_containerfile,
)
from infership.repository.filesystem import FilesystemRepository, file_sha256


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """What ``infership build`` was asked to do."""

    model_repository: Path
    tag: str
    engine: str | None = None
    """podman, buildah or docker; None takes the first found."""
    base_image: str | None = None
    """None: the public slim Python image (or the CUDA image with ``gpu``)."""
    gpu: bool = False
    context_only: Path | None = None
    """Write the build context into this folder and stop."""
    push: bool = False
    extras: tuple[str, ...] = ()
    """infership extras to install too, e.g. ("text",) for models that tokenise text."""


@dataclass(frozen=True, slots=True)
class BuildResult:
    spec: ImageSpec
    context: Path | None
    """The context folder when it was kept (``context_only``)."""
    engine: str | None
    image_id: str | None
    seconds: float


def describe_models(root: Path) -> tuple[ModelInfo, ...]:
    """Validate every model of the repository at ``root``; return what the labels record.

    Raises ConfigError for a missing repository, an empty one or an invalid model.yaml.
    """
    if not root.exists():
        raise ConfigError(f"model repository {root} does not exist")
    repository = FilesystemRepository(root)
    names = repository.names()
    if not names:
        raise ConfigError(
            f"model repository {root} holds no models (expected {root}/<name>/model.yaml)"
        )
    models = []
    for name in names:
        source = repository.find(name)
        source.verify()
        digests = tuple((v, file_sha256(source.artifact(v))) for v in source.versions)
        models.append(ModelInfo(name, source.versions, digests))
    return tuple(models)


REQUIREMENTS_NAME = "requirements.txt"
"""Packages a version's own Python needs, one requirement a line, in its version folder."""


def model_requirements(root: Path) -> tuple[str, ...]:
    """Every requirement the ``requirements.txt`` of a version folder lists, sorted and
    deduplicated. They go into the image's wheelhouse, pinned by hash like the rest. Only
    plain requirements are taken: pip options, URLs and paths would let a model repository
    point the build anywhere (ConfigError naming the file and line)."""
    repository = FilesystemRepository(root)
    found: set[str] = set()
    for name in repository.names():
        source = repository.find(name)
        for version in source.versions:
            path = source.directory / str(version) / REQUIREMENTS_NAME
            if path.is_file():
                found.update(_requirements(path))
    return tuple(sorted(found))


def _requirements(path: Path) -> list[str]:
    lines = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise ConfigError(
                f"{path}:{number}: not a package requirement ({exc}); pip options are not taken"
            ) from None
        if requirement.url is not None:
            raise ConfigError(f"{path}:{number}: {requirement.name} names a URL; name a version")
        lines.append(str(requirement))
    return lines


def write_context(spec: ImageSpec, repository: Path, directory: Path) -> None:
    """Write the Containerfile and copy the model repository into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Containerfile").write_text(render_containerfile(spec))
    models = directory / "models"
    if models.exists():
        shutil.rmtree(models)
    shutil.copytree(repository, models, ignore=shutil.ignore_patterns(".*", "__pycache__"))


def build_image(options: BuildOptions, on_line: Callable[[str], None] = print) -> BuildResult:
    """Build (and push) the image for ``options``. Raises ConfigError or BuildError."""
    started = time.perf_counter()
    # 1. Everything that can be wrong without running anything: references, models, engine.
    check_reference(options.tag, "tag")
    base = options.base_image or (GPU_BASE_IMAGE if options.gpu else CPU_BASE_IMAGE)
    check_reference(base, "base image")
    spec = ImageSpec(base, describe_models(options.model_repository), gpu=options.gpu)
    engine = None if options.context_only else engines.find_engine(options.engine)
    if engine is not None:
        engines.execute(engine.info_argv(), lambda _: None)
    # 2. The context: wheels from the host, the Containerfile, the models.
    with tempfile.TemporaryDirectory(prefix="infership-build-") as scratch:
        context = options.context_only or Path(scratch, "context")
        wheelhouse.prepare(
            context,
            spec.python_version,
            spec.gpu,
            on_line,
            options.extras,
            model_requirements(options.model_repository),
        )
        write_context(spec, options.model_repository, context)
        if engine is None:
            return BuildResult(spec, context, None, None, time.perf_counter() - started)
        # 3. Build, then push through the same engine.
        iidfile = Path(scratch) / "image-id"
        argv = engine.build_argv(context, options.tag, offline=spec.offline, iidfile=iidfile)
        engines.execute(argv, on_line, image=base)
        image_id = iidfile.read_text().strip()
    if options.push:
        engines.execute(engine.push_argv(options.tag), on_line)
    return BuildResult(spec, None, engine.name, image_id, time.perf_counter() - started)
