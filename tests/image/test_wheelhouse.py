"""The wheelhouse: requirements read from the built wheel, platforms, pins, a real pip run."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from infership.errors import BuildError
from infership.image import wheelhouse

METADATA = """\
Metadata-Version: 2.4
Name: infership
Version: 0.1.0
Requires-Dist: numpy>=1.26
Requires-Dist: onnxruntime>=1.18
Requires-Dist: uvicorn[standard]>=0.30
Requires-Dist: packaging>=23; extra == "build"
Requires-Dist: tomli>=2; python_version < "3.11"
"""


def _wheel(folder: Path) -> Path:
    path = folder / "infership-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("infership/__init__.py", "")
        archive.writestr("infership-0.1.0.dist-info/METADATA", METADATA)
    return path


def test_requirements_come_from_the_wheel_without_extras(tmp_path: Path) -> None:
    assert wheelhouse.runtime_requirements(_wheel(tmp_path), gpu=False) == [
        "numpy>=1.26",
        "onnxruntime>=1.18",
        "uvicorn[standard]>=0.30",
        'tomli>=2; python_version < "3.11"',
    ]


def test_chosen_extras_add_their_requirements(tmp_path: Path) -> None:
    requirements = wheelhouse.runtime_requirements(_wheel(tmp_path), False, ("build",))
    assert "packaging>=23" in requirements
    assert wheelhouse.runtime_requirements(_wheel(tmp_path), False, ("other",))[-1].startswith(
        "tomli"
    )


def test_gpu_swaps_onnxruntime_for_onnxruntime_gpu_keeping_the_range(tmp_path: Path) -> None:
    requirements = wheelhouse.runtime_requirements(_wheel(tmp_path), gpu=True)
    assert "onnxruntime-gpu>=1.18" in requirements
    assert "onnxruntime>=1.18" not in requirements


def test_platforms_cover_manylinux_for_the_machine() -> None:
    tags = wheelhouse.platforms("arm64")
    assert tags[0] == "manylinux_2_36_aarch64"
    assert "manylinux_2_17_aarch64" in tags
    assert tags[-1] == "manylinux2014_aarch64"
    assert all(tag.endswith("_x86_64") for tag in wheelhouse.platforms("x86_64"))


def test_constraints_pin_what_is_installed_here_but_not_infership() -> None:
    pins = wheelhouse.installed_constraints()
    assert any(pin.startswith("numpy==") for pin in pins)
    assert not any(pin.startswith("infership==") for pin in pins)


def test_development_install_builds_from_its_source_tree() -> None:
    tree = wheelhouse.source_tree()
    assert tree is not None
    assert (tree / "pyproject.toml").is_file()


def test_pip_failure_is_a_build_error_with_pips_reason(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"preparing the wheelhouse failed: pip download: .*"):
        wheelhouse._pip(
            ["download", "--no-index", "--dest", str(tmp_path), "no-such-package-xyz"],
            lambda _: None,
        )
