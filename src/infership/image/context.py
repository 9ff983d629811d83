"""The build context of an image, as pure functions: Containerfile text, labels, lock file.

``render_containerfile(spec)`` is what ``infership build`` hands to the engine. It is
golden-tested (tests/image/golden/), so a change to the image shows up as a diff in review.
The layout of a context directory::

    Containerfile
    requirements.lock     every dependency wheel, pinned by version and sha256
    wheels/               those wheels, downloaded on the host (the build itself is offline)
    dist/                 the infership wheel
    models/               the model repository, copied as is
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from infership import __version__
from infership.errors import ConfigError

CPU_BASE_IMAGE = "docker.io/library/python:3.11-slim"
GPU_BASE_IMAGE = "docker.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
CPU_PYTHON = "3.11"
GPU_PYTHON = "3.12"  # Ubuntu 24.04's python3, which the GPU flavour installs with apt

# An image reference as engines accept it: [registry[:port]/]path[:tag][@sha256:digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the image's labels say about one model: the versions served and their digests."""

    name: str
    versions: tuple[int, ...]
    digests: tuple[tuple[int, str], ...]
    """(version, sha256 of that version's artifact)"""


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """Everything the Containerfile depends on. Two equal specs render the same text."""

    base_image: str
    models: tuple[ModelInfo, ...]
    gpu: bool = False
    port: int = 8000
    grpc_port: int = 8001
    uid: int = 10001
    infership_version: str = __version__

    @property
    def python_version(self) -> str:
        """The Python of the base image, which the wheelhouse is downloaded for."""
        return GPU_PYTHON if self.gpu else CPU_PYTHON

    @property
    def offline(self) -> bool:
        """True when the build needs no network (the GPU flavour installs Python with apt)."""
        return not self.gpu


def check_reference(reference: str, what: str) -> str:
    """Return ``reference`` if it is a well-formed image reference, else raise ConfigError."""
    if not _REFERENCE.fullmatch(reference):
        raise ConfigError(
            f"{what} {reference!r} is not a valid image reference "
            "(expected [registry/]name[:tag][@sha256:digest], lowercase name)"
        )
    return reference


def labels(spec: ImageSpec) -> dict[str, str]:
    """OCI labels plus the models, versions and artifact digests the image serves."""
    names = [m.name for m in spec.models]
    result = {
        "org.opencontainers.image.title": f"infership: {', '.join(names)}",
        "org.opencontainers.image.description": "Open Inference Protocol server for "
        + ", ".join(names),
        "org.opencontainers.image.version": spec.infership_version,
        "org.opencontainers.image.licenses": "MIT",
        "org.opencontainers.image.base.name": spec.base_image,
        "io.infership.flavour": "gpu" if spec.gpu else "cpu",
        "io.infership.models": ",".join(names),
    }
    for model in spec.models:
        prefix = f"io.infership.model.{model.name}"
        result[f"{prefix}.versions"] = ",".join(str(v) for v in model.versions)
        for version, digest in model.digests:
            result[f"{prefix}.v{version}.sha256"] = digest
    return result


def render_lock(wheels: list[tuple[str, str, str]]) -> str:
    """``requirements.lock`` from (name, version, sha256) triples, sorted by name."""
    lines = ["# Every dependency, pinned to the wheel in wheels/ that `infership build` chose."]
    lines += [f"{n}=={v} --hash=sha256:{h}" for n, v, h in sorted(wheels)]
    return "\n".join(lines) + "\n"


def render_containerfile(spec: ImageSpec) -> str:
    """The Containerfile for ``spec``: a builder stage, then a runtime stage on the same base."""
    check_reference(spec.base_image, "base image")
    return "".join(
        [
            _HEADER.format(version=spec.infership_version),
            _GPU_PYTHON_STAGE.format(base=spec.base_image) if spec.gpu else "",
            _BUILDER.format(base="python" if spec.gpu else spec.base_image),
            _RUNTIME.format(
                base="python" if spec.gpu else spec.base_image,
                port=spec.port,
                grpc_port=spec.grpc_port,
                uid=spec.uid,
                gpu_env=_GPU_ENV if spec.gpu else "",
            ),
            _label_instruction(labels(spec)),
        ]
    )


def _label_instruction(values: dict[str, str]) -> str:
    pairs = [f"{key}={_quote(value)}" for key, value in values.items()]
    return "LABEL " + " \\\n      ".join(pairs) + "\n"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_HEADER = """\
# Rendered by infership {version} (`infership build`). Re-render rather than edit: this file,
# requirements.lock and wheels/ are made together.
"""

_GPU_PYTHON_STAGE = """
# 0. The CUDA base has no Python: add the distribution's, once, for both stages below.
#    (This stage needs the network; the wheel installs below still do not.)
FROM {base} AS python
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
      python3 python3-venv \\
 && rm -rf /var/lib/apt/lists/*
"""

_BUILDER = """
# 1. Dependencies, installed offline from the wheelhouse made on the host. The lock carries a
#    hash per wheel; it changes only when a dependency does, so this layer is usually cached.
FROM {base} AS builder
ENV PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY requirements.lock /build/requirements.lock
COPY wheels/ /build/wheels/
RUN python3 -m venv /opt/infership \\
 && /opt/infership/bin/pip install --no-deps --require-hashes --find-links=/build/wheels \\
      -r /build/requirements.lock

# infership itself, in its own layer, so a code change does not reinstall the dependencies.
# Then what a server never runs goes, to keep the image small: the bundled example (the image
# serves /models), the packages' test suites, onnxruntime's offline tools, and pip.
COPY dist/ /build/dist/
RUN /opt/infership/bin/pip install --no-deps /build/dist/*.whl \\
 && cd /opt/infership/lib/python3*/site-packages \\
 && rm -rf infership/examples onnxruntime/transformers onnxruntime/quantization \\
      onnxruntime/tools onnxruntime/datasets \\
 && find . -depth -type d -name tests -exec rm -rf {{}} + \\
 && /opt/infership/bin/pip uninstall --yes --quiet pip setuptools
"""

_GPU_ENV = """\
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
"""

_RUNTIME = """
# 2. Runtime: the base, the virtual environment, then the models in their own last layer, so a
#    new model version rebuilds only that layer.
FROM {base}
COPY --from=builder /opt/infership /opt/infership
# The server binds all interfaces inside the container, so it wants API keys (INFERSHIP_AUTH__*)
# or, chosen at run time, INFERSHIP_AUTH__ALLOW_UNAUTHENTICATED=true for a loopback-only port.
ENV PATH=/opt/infership/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \\
    HOME=/tmp TMPDIR=/tmp \\
    INFERSHIP_MODEL_REPOSITORY=/models \\
    INFERSHIP_HTTP__HOST=0.0.0.0 \\
    INFERSHIP_HTTP__PORT={port}
{gpu_env}\
# The root filesystem may be read-only (--read-only): /tmp is the one writable place.
VOLUME ["/tmp"]
USER {uid}:{uid}
WORKDIR /tmp
EXPOSE {port} {grpc_port}
# SIGTERM drains: the listener closes, admitted requests are answered, then the process exits.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \\
  CMD ["infership", "probe"]
ENTRYPOINT ["infership"]
CMD ["serve"]
COPY models/ /models/
"""
