"""Rendering the build context: Containerfiles (golden), labels, lock file, model checks."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from infership.app import EXAMPLE_REPOSITORY
from infership.errors import ConfigError, DigestMismatch
from infership.image.build import describe_models, write_context
from infership.image.context import (
    CPU_BASE_IMAGE,
    GPU_BASE_IMAGE,
    ImageSpec,
    ModelInfo,
    check_reference,
    labels,
    render_containerfile,
    render_lock,
)
from infership.security.encryption import encrypt_folder, is_encrypted
from infership.security.keys import new_key, parse_key

EXAMPLE_DIGEST = "e1659a083e3a858319747a697917b63b475cd51336a7a4de1c3487183db15fd4"
MODELS = (
    ModelInfo("efficientnet-lite0", (1,), ((1, EXAMPLE_DIGEST),)),
    ModelInfo("resnet", (2, 3), ((2, "a" * 64), (3, "b" * 64))),
)


def _spec(**changes: object) -> ImageSpec:
    values: dict[str, object] = {
        "base_image": CPU_BASE_IMAGE, "models": MODELS, "infership_version": "0.1.0"
    }  # fmt: skip
    values.update(changes)
    return ImageSpec(**values)  # type: ignore[arg-type]


def test_cpu_containerfile_matches_golden(golden: Callable[[str, str], None]) -> None:
    golden("Containerfile.cpu", render_containerfile(_spec()))


def test_gpu_containerfile_matches_golden(golden: Callable[[str, str], None]) -> None:
    golden("Containerfile.gpu", render_containerfile(_spec(base_image=GPU_BASE_IMAGE, gpu=True)))


def test_gpu_flavour_targets_the_python_it_installs_and_needs_the_network() -> None:
    cpu, gpu = _spec(), _spec(base_image=GPU_BASE_IMAGE, gpu=True)
    assert (cpu.python_version, cpu.offline) == ("3.11", True)
    assert (gpu.python_version, gpu.offline) == ("3.12", False)


def test_models_layer_comes_after_code_and_settings() -> None:
    # A new model version must rebuild only the last layer: nothing but metadata may follow it.
    lines = render_containerfile(_spec()).splitlines()
    models_at = lines.index("COPY models/ /models/")
    later = [line.split()[0] for line in lines[models_at + 1 :] if line and line[0].isupper()]
    assert later == ["LABEL"]
    assert lines.index("COPY --from=builder /opt/infership /opt/infership") < models_at


def test_labels_name_every_model_version_and_digest() -> None:
    result = labels(_spec())
    assert result["io.infership.models"] == "efficientnet-lite0,resnet"
    assert result["io.infership.model.resnet.versions"] == "2,3"
    assert result["io.infership.model.resnet.v3.sha256"] == "b" * 64
    assert result["io.infership.model.efficientnet-lite0.v1.sha256"] == EXAMPLE_DIGEST
    assert result["org.opencontainers.image.base.name"] == CPU_BASE_IMAGE
    assert result["org.opencontainers.image.version"] == "0.1.0"


def test_label_values_are_quoted_safely() -> None:
    text = render_containerfile(_spec(models=(ModelInfo('we"ird\\', (1,), ()),)))
    assert 'io.infership.models="we\\"ird\\\\"' in text


@pytest.mark.parametrize(
    "reference",
    [
        "python:3.11-slim",
        "localhost/python:3.11-slim",
        "docker.io/library/python:3.11-slim",
        "registry.example.com:5000/team/model-server:v1.2",
        "ghcr.io/org/img@sha256:" + "0" * 64,
    ],
)
def test_well_formed_references_are_accepted(reference: str) -> None:
    assert check_reference(reference, "tag") == reference


@pytest.mark.parametrize(
    "reference", ["", "Python:3.11", "python 3.11", "python:", "a//b", "img:tag@sha256:xyz"]
)
def test_malformed_base_image_is_a_config_error_naming_it(reference: str) -> None:
    with pytest.raises(ConfigError, match=r"base image .* is not a valid image reference"):
        render_containerfile(_spec(base_image=reference))


def test_lock_pins_each_wheel_by_version_and_hash_sorted_by_name() -> None:
    text = render_lock([("numpy", "2.0.0", "c" * 64), ("click", "8.1.0", "d" * 64)])
    assert text.splitlines()[1:] == [
        f"click==8.1.0 --hash=sha256:{'d' * 64}",
        f"numpy==2.0.0 --hash=sha256:{'c' * 64}",
    ]


def test_describe_models_reads_versions_and_hashes_artifacts() -> None:
    (model,) = describe_models(EXAMPLE_REPOSITORY)
    assert model == ModelInfo("efficientnet-lite0", (1,), ((1, EXAMPLE_DIGEST),))


def test_missing_model_repository_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model repository .*nowhere does not exist"):
        describe_models(tmp_path / "nowhere")


def test_repository_without_models_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds no models \(expected .*/<name>/model.yaml\)"):
        describe_models(tmp_path)


def test_invalid_model_yaml_fails_before_anything_is_built(repository: Path) -> None:
    (repository / "efficientnet-lite0" / "model.yaml").write_text("runtime: onnx\ncolour: red\n")
    with pytest.raises(ConfigError, match="colour"):
        describe_models(repository)


def test_artifact_that_differs_from_its_recorded_digest_is_refused(repository: Path) -> None:
    (repository / "efficientnet-lite0" / "labels.txt").write_text("cat\n")
    with pytest.raises(DigestMismatch, match=r"labels\.txt"):
        describe_models(repository)


def test_write_context_copies_models_without_hidden_files(repository: Path, tmp_path: Path) -> None:
    (repository / ".DS_Store").write_text("x")
    context = tmp_path / "context"
    shutil.copytree(repository, context / "models")  # a stale copy is replaced, not merged
    (context / "models" / "stale").mkdir()
    write_context(_spec(), repository, context)
    assert (context / "Containerfile").read_text() == render_containerfile(_spec())
    assert (context / "models" / "efficientnet-lite0" / "1" / "model.onnx").is_file()
    assert not (context / "models" / ".DS_Store").exists()
    assert not (context / "models" / "stale").exists()


def test_an_encrypted_model_is_baked_in_without_its_key(repository: Path, tmp_path: Path) -> None:
    model = repository / "efficientnet-lite0"
    key = parse_key(new_key(), "test")
    encrypt_folder(model / "1", model / "2", key)
    shutil.rmtree(model / "1")  # only the encrypted version ships
    context = tmp_path / "context"
    write_context(_spec(), repository, context)
    baked = context / "models" / "efficientnet-lite0" / "2" / "model.onnx"
    assert is_encrypted(baked)
    plaintext = (EXAMPLE_REPOSITORY / "efficientnet-lite0" / "1" / "model.onnx").read_bytes()
    for path in context.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert key not in data, path
            assert plaintext[1000:1064] not in data, path
