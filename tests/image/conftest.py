"""Fixtures for the image tests: golden files, and podman with a local base image."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
REGENERATE = os.environ.get("INFERSHIP_REGENERATE_GOLDEN") == "1"
"""INFERSHIP_REGENERATE_GOLDEN=1 pytest tests/image rewrites the golden files; review the diff."""

BASE_IMAGE = "localhost/python:3.11-slim"


@pytest.fixture
def golden() -> Callable[[str, str], None]:
    """Compare text with tests/image/golden/NAME (or rewrite it when regenerating)."""

    def check(name: str, text: str) -> None:
        path = GOLDEN / name
        if REGENERATE:
            path.write_text(text)
        assert path.exists(), f"{path} missing: run with INFERSHIP_REGENERATE_GOLDEN=1"
        assert text == path.read_text(), f"{name} differs from its golden file"

    return check


@pytest.fixture(scope="session")
def base_image() -> str:
    """A local stand-in for python:3.11-slim, made from Debian packages once, then reused."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run .ci/setup.d/20-podman.sh")
    script = Path(__file__).parent / "make_base_image.sh"
    subprocess.run(["sh", str(script)], check=True, env={**os.environ, "TAG": BASE_IMAGE})
    return BASE_IMAGE


EXAMPLE_TAG = "localhost/infership-e2e:example"
"""The bundled example's image; tests/image and tests/k8s share it (and podman's layer cache)."""


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, check=check, timeout=timeout
    )


def infership_build(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infership", "build", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="session")
def example_image(base_image: str) -> str:
    """The bundled example built by `infership build` (warm after the first build)."""
    from infership.app import EXAMPLE_REPOSITORY

    built = infership_build(
        str(EXAMPLE_REPOSITORY), "--tag", EXAMPLE_TAG, "--base-image", base_image
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert f"built {EXAMPLE_TAG}" in built.stdout
    return EXAMPLE_TAG
