"""The wheelhouse: every wheel the image installs, fetched on the host with pip.

The build then installs offline from it, so builds need no registry and are repeatable. The
versions are those installed here, where the model was tested, whenever they are dependencies
of infership; the rest are resolved by pip for the image's Python and platform.
"""

from __future__ import annotations

import contextlib
import email.parser
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

from infership.errors import BuildError
from infership.image.context import render_lock

# Fixed wheel timestamps make the infership wheel byte-identical across builds of the same
# source, so the engine's layer cache holds (setuptools reads SOURCE_DATE_EPOCH).
_SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold
_COMPLETE = ".complete"


def runtime_requirements(wheel: Path, gpu: bool, extras: tuple[str, ...] = ()) -> list[str]:
    """The dependencies a wheel declares, with those of the ``extras`` asked for; for GPUs
    onnxruntime-gpu replaces onnxruntime. Read from the wheel just built, since an editable
    install's metadata can lag behind its source."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        declared = email.parser.BytesParser().parsebytes(archive.read(name))
    result = []
    for line in declared.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is not None and "extra" in str(marker):
            if not any(marker.evaluate({"extra": extra}) for extra in extras):
                continue
            requirement.marker = None  # the extra is chosen; other conditions do not apply
        if gpu and requirement.name == "onnxruntime":
            requirement.name = "onnxruntime-gpu"
        result.append(str(requirement))
    return result


def installed_constraints() -> list[str]:
    """``name==version`` for every distribution installed here: the versions we tested with."""
    pins = {d.metadata["Name"]: d.version for d in metadata.distributions() if d.metadata["Name"]}
    return [f"{name}=={version}" for name, version in sorted(pins.items()) if name != "infership"]


def platforms(machine: str | None = None) -> list[str]:
    """Platform tags for Linux images of this machine's architecture (glibc up to 2.36)."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine or "", machine or "")
    arch = arch or platform.machine()
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def source_tree() -> Path | None:
    """The folder infership was installed from in development mode, if it was."""
    direct_url = metadata.distribution("infership").read_text("direct_url.json")
    if not direct_url:
        return None
    url = json.loads(direct_url).get("url", "")
    return Path(url.removeprefix("file://")) if url.startswith("file://") else None


def prepare(
    context: Path,
    python_version: str,
    gpu: bool,
    on_line: Callable[[str], None],
    extras: tuple[str, ...] = (),
    model_requirements: tuple[str, ...] = (),
) -> list[Path]:
    """Fill ``context``/wheels, ``context``/dist and ``context``/requirements.lock; return the
    dependency wheels, those the models' own code needs (``model_requirements``) included.
    Raises BuildError naming pip's complaint."""
    wheels, dist = context / "wheels", context / "dist"
    for folder in (wheels, dist):  # a reused context must not keep wheels of another build
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    infership = _build_infership_wheel(dist, on_line)
    arguments = [
        "download", "--only-binary=:all:",
        "--python-version", python_version, "--implementation", "cp",
        *(arg for tag in platforms() for arg in ("--platform", tag)),
        *runtime_requirements(infership, gpu, extras),
        *model_requirements,
    ]  # fmt: skip
    constraints = installed_constraints()
    cached = _cache_folder(arguments, constraints)
    if not (cached / _COMPLETE).exists():
        _download(arguments, constraints, cached, on_line)
    else:
        on_line(f"wheelhouse: reusing {cached}")
    for wheel in cached.glob("*.whl"):
        _link_or_copy(wheel, wheels / wheel.name)
    found = sorted(wheels.glob("*.whl"))
    (context / "requirements.lock").write_text(render_lock([_pin(w) for w in found]))
    return found


def cache_root() -> Path:
    """Where downloaded wheelhouses are kept between builds ($XDG_CACHE_HOME/infership)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "infership" / "wheelhouse"


def _cache_folder(arguments: list[str], constraints: list[str]) -> Path:
    # Same pip arguments and same pins resolve to the same wheels: reuse them.
    key = hashlib.sha256("\n".join([*arguments, "--", *constraints]).encode()).hexdigest()
    return cache_root() / key[:32]


def _download(
    arguments: list[str], constraints: list[str], folder: Path, on_line: Callable[[str], None]
) -> None:
    # Into a private folder first, renamed when complete: builds running at once never see
    # half a wheelhouse.
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=folder.parent) as scratch:
        partial = Path(scratch, "wheels")
        partial.mkdir()
        pins = partial / ".constraints.txt"
        pins.write_text("\n".join(constraints) + "\n")
        _pip([*arguments, "--dest", str(partial), "--constraint", str(pins)], on_line)
        (partial / _COMPLETE).touch()
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete earlier attempt
        with contextlib.suppress(OSError):  # another build finished the same one first
            partial.rename(folder)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copy2(source, target)


def _build_infership_wheel(dist: Path, on_line: Callable[[str], None]) -> Path:
    tree = source_tree()
    if tree is None:
        version = metadata.version("infership")
        _pip(["download", "--no-deps", "--dest", str(dist), f"infership=={version}"], on_line)
        return next(dist.glob("infership-*.whl"))
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources, which
    # would race with a second build and leave files in the developer's tree.
    with tempfile.TemporaryDirectory(prefix="infership-wheel-") as scratch:
        copy = Path(scratch)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (tree / name).exists():
                shutil.copy2(tree / name, copy / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
        shutil.copytree(tree / "src", copy / "src", ignore=ignore)
        env = {**os.environ, "SOURCE_DATE_EPOCH": _SOURCE_DATE_EPOCH}
        # An isolated build env costs seconds per build; a development install has setuptools.
        isolation = [] if find_spec("setuptools") is None else ["--no-build-isolation"]
        _pip(["wheel", "--no-deps", *isolation, "--wheel-dir", str(dist), str(copy)], on_line, env)
    return next(dist.glob("infership-*.whl"))


def _pin(wheel: Path) -> tuple[str, str, str]:
    name, version, _, _ = parse_wheel_filename(wheel.name)
    return str(name), str(version), hashlib.sha256(wheel.read_bytes()).hexdigest()


def _pip(
    arguments: list[str], on_line: Callable[[str], None], env: dict[str, str] | None = None
) -> None:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", *arguments]
    process = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    for line in process.stdout.splitlines():
        on_line(line)
    if process.returncode != 0:
        tail = "\n".join(process.stderr.strip().splitlines()[-8:])
        raise BuildError(f"preparing the wheelhouse failed: pip {arguments[0]}: {tail}")
