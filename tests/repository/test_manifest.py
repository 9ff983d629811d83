"""model.yaml validation: every problem names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from infership.errors import ConfigError
from infership.repository.manifest import LatestVersions, SpecificVersions, load_manifest

MINIMAL = "runtime: onnx\n"


def write(tmp_path: Path, text: str, folder: str = "m") -> Path:
    path = tmp_path / folder / "model.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_minimal_manifest_gets_defaults(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, MINIMAL))
    assert manifest.artifact == "model.onnx"
    assert manifest.version_policy == "latest"
    assert manifest.batching.max_batch_size == 8


@pytest.mark.parametrize(
    ("text", "field"),
    [
        pytest.param("colour: red\n", "'colour': unknown key", id="unknown-key"),
        pytest.param(
            "batching: {max_batch_size: eight}\n", "batching.max_batch_size", id="wrong-type"
        ),
        pytest.param(
            "batching: {max_batch_size: 0}\n", "batching.max_batch_size", id="out-of-range"
        ),
        pytest.param("batching: {colour: red}\n", "batching.colour", id="nested-unknown-key"),
        pytest.param("runtime: tensorflow\n", "runtime", id="unknown-runtime"),
        pytest.param(
            "inputs: [{name: x, datatype: fp32, shape: [1]}]\n", "inputs.0.datatype", id="datatype"
        ),
        pytest.param(
            "inputs: [{name: x, datatype: FP32, shape: [0]}]\n", "inputs.0.shape", id="dim"
        ),
        pytest.param("sha256: {model.onnx: abc}\n", "sha256", id="bad-digest"),
        pytest.param("sha256: {../x: " + "0" * 64 + "}\n", "sha256", id="digest-outside"),
        pytest.param("version_policy: newest\n", "version_policy", id="version-policy"),
        pytest.param("artifact: ../../etc/passwd\n", "artifact", id="artifact-outside"),
        pytest.param(
            "postprocess: {classification: {output: y, labels: /etc/passwd}}\n",
            "postprocess.classification.labels",
            id="labels-outside",
        ),
        pytest.param(
            "preprocess: {image: {input: x, resize: [224, 224], mean: [0.5]}}\n",
            "preprocess.image",
            id="mean-channels",
        ),
    ],
)
def test_invalid_manifest_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    assert str(path) in str(info.value)
    assert field in str(info.value)


def test_malformed_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "batching: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_manifest(path)


def test_non_mapping_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_manifest(write(tmp_path, "- a\n- b\n"))


def test_name_must_match_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="differs from folder"):
        load_manifest(write(tmp_path, "name: other\n", folder="m"))


def test_version_policies_parse(tmp_path: Path) -> None:
    assert load_manifest(write(tmp_path, "version_policy: all\n")).version_policy == "all"
    latest = load_manifest(write(tmp_path, "version_policy: {latest: 2}\n")).version_policy
    assert latest == LatestVersions(latest=2)
    specific = load_manifest(write(tmp_path, "version_policy: {specific: [1, 3]}\n"))
    assert specific.version_policy == SpecificVersions(specific=(1, 3))
