"""What a load can meet in a model folder, and what the caller can name: every problem is an
InvalidRequest (the name) or a ConfigError naming the file and the problem, never an OSError,
a UnicodeDecodeError, a RecursionError or a ValueError; and a failed reload leaves the serving
version serving. Over sockets: tests/e2e/test_repository_load_errors.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from infership.app import Application
from infership.errors import ConfigError, InvalidRequest, ModelNotFound
from infership.loader import ModelLoader
from infership.registry import ModelState
from infership.repository import FilesystemRepository
from infership.repository.manifest import check_model_name, is_model_name, load_manifest
from infership.safeyaml import MAX_BYTES, MAX_DEPTH, MAX_NODES
from infership.settings import ServerSettings

BENCH_MODELS = Path(__file__).parents[2] / "bench" / "models"
LABELS = "".join(f"class {i}\n" for i in range(16))


def manifest(tmp_path: Path, data: bytes | str, folder: str = "m") -> Path:
    path = tmp_path / folder / "model.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 129,
        "a" * 256,
        "a" * 100_000,
        "m\x00",
        "m\n",
        "..",
        ".m",
        "-m",
        "a/b",
        "a\\b",
        "../../etc",
        "café",
        "ａ",
        "٣",
        "m\u200b",
        "\ud800",
    ],
)
def test_a_name_no_model_folder_can_have_is_an_invalid_request_and_never_exists(
    tmp_path: Path, name: str
) -> None:
    assert not is_model_name(name)
    with pytest.raises(InvalidRequest, match="not a valid model name") as info:
        check_model_name(name)
    assert len(str(info.value)) < 300
    repository = FilesystemRepository(tmp_path)
    assert repository.exists(name) is False  # never an OSError or ValueError
    with pytest.raises(ModelNotFound):
        repository.find(name)


@pytest.mark.parametrize("name", ["m", "a" * 128, "resnet50.v1_int8-b", "9"])
def test_names_of_letters_digits_dot_dash_underscore_are_valid(name: str) -> None:
    assert is_model_name(name)
    check_model_name(name)


# --- model.yaml -------------------------------------------------------------------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        pytest.param(
            b"description: caf\xe9\n", "not UTF-8 text: byte 0xe9 at offset", id="latin-1"
        ),
        pytest.param("runtime: onnx\n".encode("utf-16"), "not UTF-8", id="utf-16"),
        pytest.param(b"description: \xed\xa0\x80\n", "not UTF-8", id="surrogate"),
        pytest.param(b"runtime: onnx\x00\n", "not valid YAML", id="nul"),
        pytest.param(b"runtime: \x1b[31m\n", "not valid YAML", id="control-char"),
        pytest.param(b"x" * (MAX_BYTES + 1), f"larger than {MAX_BYTES}", id="huge"),
        pytest.param(LAUGHS, f"more than {MAX_NODES} values", id="billion-laughs"),
        pytest.param(
            "a: &a [" + ", ".join(["x"] * 400) + "]\nb: [" + ", ".join(["*a"] * 400) + "]\n",
            "aliases are expanded",
            id="wide-aliases",
        ),
        pytest.param(
            "a: &a " + "[" * 20 + "]" * 20 + "\nb: " + "[" * 20 + "*a" + "]" * 20 + "\n",
            "nested deeper",
            id="deep-through-aliases",
        ),
        pytest.param("a: &a [*a]\n", "contains it", id="cycle"),
        pytest.param("&a {x: *a}\n", "contains it", id="cycle-root"),
        pytest.param("[" * 100_000 + "]" * 100_000, f"deeper than {MAX_DEPTH}", id="deep-flow"),
        pytest.param(
            "".join("  " * i + "k:\n" for i in range(MAX_DEPTH + 1)), "deeper", id="deep-block"
        ),
        pytest.param("runtime: onnx\nruntime: torch\n", "'runtime' given twice", id="duplicate"),
        pytest.param("batching: {a: 1, a: 2}\n", "given twice", id="nested-duplicate"),
        pytest.param("!!python/object/apply:os.system ['true']\n", "constructor", id="py-root"),
        pytest.param("runtime: !!python/name:os.system\n", "constructor", id="py-name"),
        pytest.param("- a\n", "expected a mapping of settings, got list", id="list-root"),
        pytest.param("42\n", "expected a mapping of settings, got int", id="int-root"),
        pytest.param("? [a]\n: 1\n", "unhashable", id="list-key"),
        pytest.param("1: 2\n", "Keys should be strings", id="int-key"),
        pytest.param("batching: {max_batch_size: " + "9" * 5000 + "}\n", "digits", id="bigint"),
        pytest.param(
            "".join(f"k{i}: 1\n" for i in range(5000)), "more characters", id="many-unknown-keys"
        ),
        pytest.param("a: [\n", "not valid YAML", id="truncated"),
        pytest.param("a: 1\n---\nb: 2\n", "single document", id="two-documents"),
        pytest.param("colour: red\n", "'colour': unknown key", id="unknown-key"),
        pytest.param('name: "m\\n"\n', "differs from folder", id="name-with-newline"),
        pytest.param('sha256: {model.onnx: "' + "0" * 64 + '\\n"}\n', "hex", id="digest-newline"),
    ],
)
def test_a_hostile_or_broken_model_yaml_is_a_config_error_naming_the_file(
    tmp_path: Path, data: bytes | str, problem: str
) -> None:
    path = manifest(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_manifest(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert problem in message
    assert len(message) < 3000


@pytest.mark.parametrize(
    "data",
    [
        "\ufeffruntime: onnx\n",
        "",
        "# only a comment\n",
        "description: &d shared\nonnx: &o {intra_op_threads: 1}\ntorch: {intra_op_threads: 1}\n",
        "description: café ☕\n",
    ],
)
def test_ordinary_yaml_still_loads(tmp_path: Path, data: str) -> None:
    load_manifest(manifest(tmp_path, data))


# --- files named by model.yaml ----------------------------------------------------------------


def model_folder(tmp_path: Path, text: str = "runtime: onnx\n") -> Path:
    folder = tmp_path / "m"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(b"onnx")
    (folder / "model.yaml").write_text(text)
    return folder


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("artifact: " + "a" * 300 + "\n", "field 'artifact'.*File name too long"),
        ("artifact: " + "/".join(["d"] * 3000) + "\n", "field 'artifact'.*(too long|not exist)"),
        ('artifact: "a\\0b"\n', "field 'artifact'.*not a usable path"),
        ("artifact: model.onnx/x\n", "field 'artifact'.*Not a directory"),
        ("artifact: ../1/model.onnx\n", "artifact"),
        (
            "postprocess: {classification: {output: y, labels: " + "l" * 300 + "}}\n",
            "field 'postprocess.classification.labels'.*File name too long",
        ),
        (
            "signing: {policy: require, public_key: '1'}\n",
            "field 'signing.public_key'.*is not a regular file",
        ),
        ("sha256: {'1': '" + "0" * 64 + "'}\n", "field 'sha256.1'.*is not a regular file"),
    ],
)
def test_a_path_in_model_yaml_the_file_system_refuses_is_a_config_error_naming_the_field(
    tmp_path: Path, text: str, problem: str
) -> None:
    model_folder(tmp_path, text)
    with pytest.raises(ConfigError, match=problem):
        FilesystemRepository(tmp_path).find("m")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_model_yaml_is_a_config_error(tmp_path: Path) -> None:
    folder = model_folder(tmp_path)
    (folder / "model.yaml").chmod(0)
    try:
        with pytest.raises(ConfigError, match="cannot read: Permission denied"):
            FilesystemRepository(tmp_path).find("m")
    finally:
        (folder / "model.yaml").chmod(0o644)


def test_only_canonical_version_folders_count(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "version_policy: all\n")
    for extra in ("01", "007", "٣"):
        (folder / extra).mkdir()
        (folder / extra / "model.onnx").write_bytes(b"onnx")
    assert FilesystemRepository(tmp_path).find("m").versions == (1,)


# --- loads through the registry ---------------------------------------------------------------


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Application]:
    """bench/models' trivial model twice: plain, and as a classifier reading labels.txt."""
    root = tmp_path / "models"
    shutil.copytree(BENCH_MODELS / "add", root / "add")
    labelled = root / "labelled"
    shutil.copytree(BENCH_MODELS / "add", labelled)
    (labelled / "labels.txt").write_text(LABELS)
    text = (labelled / "model.yaml").read_text().split("sha256:")[0]
    (labelled / "model.yaml").write_text(
        text + "postprocess: {classification: {output: y, top_k: 1, labels: labels.txt}}\n"
    )
    application = Application(ServerSettings(model_repository=root, model_control=True))
    application.check()
    await application.start()
    yield application
    await application.stop()


def states(app: Application, name: str) -> list[tuple[int | None, ModelState, str]]:
    return [(s.version, s.state, s.reason) for s in app.registry.index() if s.name == name]


async def test_a_bad_name_is_refused_before_the_file_system_and_changes_nothing(
    app: Application,
) -> None:
    before = app.registry.index()
    for name in ("a" * 256, "add\x00", "../add", "add\n"):
        with pytest.raises(InvalidRequest, match="not a valid model name"):
            await app.registry.load(name)
        with pytest.raises(InvalidRequest):
            await app.registry.unload(name)
    assert app.registry.index() == before
    assert app.registry.get("add").version == 1


async def test_a_failed_reload_keeps_the_old_version_serving_and_says_why(
    app: Application,
) -> None:
    path = app.repository.root / "add" / "model.yaml"
    serving = app.registry.get("add")
    path.write_bytes(path.read_bytes() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        await app.registry.load("add")
    assert app.registry.get("add") is serving
    ((version, state, reason),) = states(app, "add")
    assert (version, state) == (1, ModelState.READY)
    assert reason.startswith("reload failed: ")
    assert "not UTF-8" in reason


async def test_a_labels_file_that_is_not_utf8_is_a_config_error_naming_it(
    app: Application,
) -> None:
    serving = app.registry.get("labelled")
    labels = app.repository.root / "labelled" / "labels.txt"
    labels.write_bytes(LABELS.replace("class 3", "classé 3").encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        await app.registry.load("labelled")
    message = str(info.value)
    assert "field 'postprocess.classification.labels'" in message
    assert f"{labels} is not UTF-8 text: byte 0xe9" in message
    assert app.registry.get("labelled") is serving


async def test_a_file_error_nobody_named_is_still_a_config_error(
    app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(self: ModelLoader, source: object, version: int) -> None:
        raise PermissionError(13, "Permission denied", "/models/add/1/model.onnx")

    monkeypatch.setattr(ModelLoader, "_build", unreadable)
    with pytest.raises(ConfigError, match=r"cannot read /models/add/1/model\.onnx: Permission"):
        await app.registry.load("add")
    assert app.registry.get("add").version == 1


async def test_an_unexpected_error_on_a_first_load_does_not_leave_it_loading(
    app: Application, monkeypatch: pytest.MonkeyPatch
) -> None:
    await app.registry.unload("add")

    def broken(self: ModelLoader, source: object, version: int) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ModelLoader, "_build", broken)
    with pytest.raises(RuntimeError):
        await app.registry.load("add")
    assert states(app, "add") == [(None, ModelState.UNAVAILABLE, "internal error")]
