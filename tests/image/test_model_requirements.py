"""A model's own Python may need packages: each version folder's requirements.txt goes into the
image's wheelhouse, pinned by hash like every other dependency, and nothing else does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from infership.errors import ConfigError
from infership.image import build, wheelhouse

BENCH_MODELS = Path(__file__).parents[2] / "bench" / "models"


def repository(tmp_path: Path, **requirements: str) -> Path:
    """bench/models' add model once per version given, each with that requirements.txt."""
    root = tmp_path / "models"
    shutil.copytree(BENCH_MODELS / "add", root / "add")
    text = (root / "add" / "model.yaml").read_text().split("sha256:")[0]
    (root / "add" / "model.yaml").write_text(text + "version_policy: all\n")
    for version, lines in requirements.items():
        folder = root / "add" / version.removeprefix("v")
        if not folder.exists():
            shutil.copytree(root / "add" / "1", folder)
        (folder / "requirements.txt").write_text(lines)
    return root


def test_every_versions_requirements_are_collected_once_each(tmp_path: Path) -> None:
    root = repository(
        tmp_path,
        v1="scikit-learn==1.7.2  # the pipeline\n\nnumpy>=1.26\n",
        v2="numpy>=1.26\nscipy>=1.11 ; python_version >= '3.11'\n",
    )
    assert build.model_requirements(root) == (
        "numpy>=1.26",
        "scikit-learn==1.7.2",
        'scipy>=1.11; python_version >= "3.11"',
    )


def test_a_repository_without_requirements_adds_nothing(tmp_path: Path) -> None:
    assert build.model_requirements(repository(tmp_path)) == ()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--index-url https://elsewhere.example/simple", "not a package requirement"),
        ("-e ../src", "not a package requirement"),
        ("./wheels/evil-1.0-py3-none-any.whl", "not a package requirement"),
        ("evil @ https://elsewhere.example/evil.whl", "names a URL"),
    ],
    ids=["index-url", "editable", "path", "url"],
)
def test_pip_options_urls_and_paths_are_refused_naming_the_line(
    tmp_path: Path, line: str, message: str
) -> None:
    root = repository(tmp_path, v1=f"numpy\n{line}\n")
    with pytest.raises(ConfigError, match=rf"add/1/requirements\.txt:2: .*{message}"):
        build.model_requirements(root)


def test_the_wheelhouse_downloads_the_models_requirements_with_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[list[str]] = []
    monkeypatch.setattr(wheelhouse, "cache_root", lambda: tmp_path / "cache")
    monkeypatch.setattr(
        wheelhouse,
        "_download",
        lambda arguments, constraints, folder, on_line: (
            asked.append(arguments) or _complete(folder)
        ),
    )
    wheelhouse.prepare(
        tmp_path / "context", "3.11", False, lambda _: None, (), ("scikit-learn==1.7.2",)
    )
    (arguments,) = asked
    assert "scikit-learn==1.7.2" in arguments
    assert any(a.startswith("onnxruntime") for a in arguments)  # beside infership's own


def _complete(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / ".complete").touch()
