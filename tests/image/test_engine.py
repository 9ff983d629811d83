"""Finding and running a container engine; failures explained in our terms."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from infership.errors import BuildError
from infership.image.engine import ENGINES, Engine, execute, explain, find_engine


def _executable(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_no_engine_on_path_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no container engine found: podman or buildah or docker"):
        find_engine(path=str(tmp_path))


def test_named_engine_missing_is_named(tmp_path: Path) -> None:
    _executable(tmp_path, "podman")
    with pytest.raises(BuildError, match="docker is not on PATH"):
        find_engine("docker", path=str(tmp_path))


def test_engines_are_preferred_in_order(tmp_path: Path) -> None:
    for name in ENGINES[1:]:
        _executable(tmp_path, name)
    assert find_engine(path=str(tmp_path)).name == "buildah"
    _executable(tmp_path, "podman")
    found = find_engine(path=str(tmp_path))
    assert found == Engine("podman", str(tmp_path / "podman"))


def test_podman_builds_docker_format_offline_with_layer_cache(tmp_path: Path) -> None:
    argv = Engine("podman", "/usr/bin/podman").build_argv(
        tmp_path, "localhost/m:1", offline=True, iidfile=tmp_path / "id"
    )
    assert argv == [
        "/usr/bin/podman", "build", "--file", str(tmp_path / "Containerfile"),
        "--tag", "localhost/m:1", "--iidfile", str(tmp_path / "id"),
        "--format", "docker", "--layers", "--network=none", str(tmp_path),
    ]  # fmt: skip


def test_docker_argv_has_no_podman_only_flags_and_network_when_online(tmp_path: Path) -> None:
    argv = Engine("docker", "docker").build_argv(
        tmp_path, "m:1", offline=False, iidfile=tmp_path / "id"
    )
    assert "--format" not in argv
    assert "--network=none" not in argv
    assert Engine("docker", "docker").push_argv("m:1") == ["docker", "push", "m:1"]


def test_execute_streams_every_line_in_order() -> None:
    lines: list[str] = []
    execute([sys.executable, "-c", "print('one'); print('two', flush=True)"], lines.append)
    assert lines == ["one", "two"]


def test_failing_command_raises_with_exit_code_and_last_lines() -> None:
    script = "import sys\nfor i in range(40): print(f'line {i}')\nsys.exit(3)"
    with pytest.raises(BuildError) as caught:
        execute([sys.executable, "-c", script], lambda _: None)
    message = str(caught.value)
    assert message.startswith(f"{Path(sys.executable).name} -c failed (exit code 3)")
    assert "  | line 39" in message
    assert "line 10\n" not in message  # only the tail


def test_unrunnable_engine_is_a_build_error(tmp_path: Path) -> None:
    not_executable = tmp_path / "podman"
    not_executable.write_text("")
    with pytest.raises(BuildError, match=f"cannot run {not_executable}: Permission denied"):
        execute([str(not_executable), "build"], lambda _: None)


# Messages below are what the engines print (podman 4.3 and docker 28, captured on this machine).
PODMAN_NO_BASE = [
    "STEP 1/2: FROM localhost/nope:1",
    "Trying to pull localhost/nope:1...",
    "Error: creating build container: initializing source docker://localhost/nope:1: pinging "
    'container registry localhost: Get "https://localhost/v2/": dial tcp 127.0.0.1:443: '
    "connect: connection refused",
]
DOCKER_NO_DAEMON = [
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?"
]


def test_missing_base_image_is_named_with_what_to_do() -> None:
    message = explain(["/usr/bin/podman", "build"], 125, PODMAN_NO_BASE, "localhost/nope:1")
    first = message.splitlines()[0]
    assert first.startswith("base image 'localhost/nope:1' could not be found or pulled")
    assert "podman pull localhost/nope:1" in first
    assert "--base-image" in first
    assert message.endswith("  | " + PODMAN_NO_BASE[-1])


def test_docker_without_daemon_says_so() -> None:
    message = explain(["docker", "build"], 1, DOCKER_NO_DAEMON, "python:3.11-slim")
    assert message.startswith("docker cannot reach its daemon")


def test_other_failures_keep_the_engine_and_operation() -> None:
    message = explain(["podman", "push"], 125, ["Error: something else"], None)
    assert message == "podman push failed (exit code 125)\n  | Error: something else"
    assert explain(["podman"], 1, [], None) == "podman  failed (exit code 1)"


def test_path_default_is_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _executable(tmp_path, "buildah")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_engine().executable == os.path.join(tmp_path, "buildah")
