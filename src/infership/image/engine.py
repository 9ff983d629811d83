"""Container engines (podman, buildah, docker): finding one, and running it with argv lists.

The engine's output is streamed line by line to a callback as it comes. A failure becomes a
BuildError whose message says what went wrong in our terms (no engine, no daemon, base image
not found, push refused) followed by the engine's last lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infership.errors import BuildError

ENGINES = ("podman", "buildah", "docker")
"""In order of preference: both daemonless engines first."""

_TAIL_LINES = 15

# Substrings by which engines say that an image could not be found or fetched.
_IMAGE_MISSING = (
    "image not known",
    "manifest unknown",
    "not found",
    "does not exist",
    "pull access denied",
    "initializing source",
    "short-name",
    "repository name must",
)
_NO_DAEMON = ("cannot connect to the docker daemon", "is the docker daemon running")


@dataclass(frozen=True, slots=True)
class Engine:
    """One engine executable, and the argv it needs for each operation."""

    name: str
    executable: str

    def build_argv(self, context: Path, tag: str, *, offline: bool, iidfile: Path) -> list[str]:
        argv = [self.executable, "build", "--file", str(context / "Containerfile")]
        argv += ["--tag", tag, "--iidfile", str(iidfile)]
        if self.name != "docker":
            # HEALTHCHECK survives only in docker-format images; buildah caches layers only
            # when asked.
            argv += ["--format", "docker", "--layers"]
        if offline:
            argv.append("--network=none")
        return [*argv, str(context)]

    def info_argv(self) -> list[str]:
        """A cheap command that fails the way a build would if the engine cannot work."""
        return [self.executable, "info"]

    def push_argv(self, tag: str) -> list[str]:
        return [self.executable, "push", tag]


def find_engine(name: str | None = None, path: str | None = None) -> Engine:
    """The named engine, or the first of ENGINES on ``path`` (default: $PATH).

    Raises BuildError when none is found.
    """
    search = path if path is not None else os.environ.get("PATH", "")
    for candidate in (name,) if name else ENGINES:
        executable = shutil.which(candidate, path=search)
        if executable is not None:
            return Engine(candidate, executable)
    wanted = name or " or ".join(ENGINES)
    raise BuildError(
        f"no container engine found: {wanted} is not on PATH. Install podman (recommended; "
        "no daemon needed) or name another with --engine, or use --context-only DIR to write "
        "the build context without building."
    )


def execute(argv: list[str], on_line: Callable[[str], None], *, image: str | None = None) -> None:
    """Run ``argv``, streaming its output; raise BuildError explaining a failure.

    ``image`` is the image the command may have to fetch (the base image of a build), so that
    the error can name it.
    """
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
    except OSError as exc:
        raise BuildError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    assert process.stdout is not None
    with process:
        for raw in process.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            on_line(line)
    if process.returncode != 0:
        raise BuildError(explain(argv, process.returncode, list(tail), image))


def explain(argv: list[str], returncode: int, tail: list[str], image: str | None) -> str:
    """A failure of ``argv`` in our terms, followed by the engine's last lines."""
    engine, operation = Path(argv[0]).name, argv[1] if len(argv) > 1 else ""
    text = "\n".join(tail).lower()
    if any(s in text for s in _NO_DAEMON):
        summary = (
            f"{engine} cannot reach its daemon: start the Docker daemon, or use --engine podman"
        )
    elif image is not None and image.lower() in text and any(s in text for s in _IMAGE_MISSING):
        summary = (
            f"base image {image!r} could not be found or pulled: check the name, pull or "
            f"load it first ({engine} pull {image}), or pass another with --base-image"
        )
    else:
        summary = f"{engine} {operation} failed (exit code {returncode})"
    details = "\n".join(f"  | {line}" for line in tail)
    return f"{summary}\n{details}" if details else summary
