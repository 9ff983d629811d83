"""Signed and encrypted copies of the example model, loaded by the real loader and onnxruntime."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from keyfiles import KeyPair, write_encryption_key, write_signing_key

from conftest import EXAMPLE, reference_preprocess
from infership.app import Application
from infership.errors import ConfigError, DecryptionFailed, SignatureInvalid
from infership.registry import ModelState
from infership.repository import FilesystemRepository
from infership.security.encryption import encrypt_folder
from infership.security.guard import ModelGuard
from infership.security.keys import key_id, new_key, read_key_file
from infership.security.signing import sign_folder
from infership.settings import ModelSecuritySettings, ServerSettings


@pytest.fixture
def signing_key(tmp_path: Path) -> KeyPair:
    return write_signing_key(tmp_path, "signer")


@pytest.fixture
def other_signing_key(tmp_path: Path) -> KeyPair:
    return write_signing_key(tmp_path, "stranger")


@pytest.fixture
def encryption_key(tmp_path: Path) -> Path:
    return write_encryption_key(tmp_path / "model.key")


def make_settings(repository: Path, **security: Any) -> ServerSettings:
    return ServerSettings(
        model_repository=repository,
        model_control=True,
        grpc={"enabled": False},
        model_security={"key_env": "", **security},
    )


@asynccontextmanager
async def serving(settings: ServerSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = Application(settings)
    app.check()
    await app.start()
    try:
        transport = httpx.ASGITransport(app=app.rest)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
    finally:
        await app.stop()


def encrypt_example(repository: Path, key_file: Path) -> Path:
    """Replace version 1 of the example by its encrypted copy, as a user would (1 -> 2)."""
    model = repository / EXAMPLE
    encrypt_folder(model / "1", model / "2", read_key_file(key_file))
    (model / "1" / "model.onnx").unlink()
    (model / "1").rmdir()
    unpin(repository)
    return model / "2"


def unpin(repository: Path) -> None:
    """Drop the sha256 pinned in model.yaml for version 1: the signature takes its place (and
    the pin would catch tampering before the signature check under test)."""
    manifest = repository / EXAMPLE / "model.yaml"
    manifest.write_text(manifest.read_text().replace("  1/model.onnx:", "  # 1/model.onnx:"))


def copy_key(source: Path, target: Path) -> str:
    text = source.read_text()
    target.write_text(text)
    return text


async def logits(client: httpx.AsyncClient, jpeg: bytes) -> np.ndarray:
    pixels = reference_preprocess(jpeg)
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(pixels.shape),
                "data": pixels.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "logits"}],
    }
    response = await client.post(f"/v2/models/{EXAMPLE}/infer", json=body)
    assert response.status_code == 200, response.text
    return np.array(response.json()["outputs"][0]["data"], dtype=np.float32)


async def test_an_encrypted_model_serves_the_same_predictions_as_the_plain_one(
    repository: Path,
    encryption_key: Path,
    client: httpx.AsyncClient,
    chelsea: bytes,
    coffee: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    encrypt_example(repository, encryption_key)
    with caplog.at_level(logging.INFO, logger="infership.security"):
        async with serving(make_settings(repository, key_file=encryption_key)) as encrypted:
            for jpeg in (chelsea, coffee):
                np.testing.assert_allclose(
                    await logits(encrypted, jpeg), await logits(client, jpeg), rtol=1e-5, atol=1e-5
                )
            upload = await encrypted.post("/predict", files={"img": ("cat.jpg", chelsea)})
            assert upload.json()["predictions"][0]["top_k"][0]["label"] == "Egyptian cat"
    key = key_id(read_key_file(encryption_key))
    assert f"model '{EXAMPLE}' version 2: decrypted model.onnx in memory with key {key}" in (
        caplog.text
    )


def snapshot(*folders: Path) -> dict[Path, tuple[int, int]]:
    files = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                files[path] = (stat.st_size, stat.st_mtime_ns)
    return files


async def test_decrypted_bytes_never_reach_the_disk(
    repository: Path, encryption_key: Path, tmp_path: Path
) -> None:
    plain = (repository / EXAMPLE / "1" / "model.onnx").read_bytes()
    # Distinctive slices of the plaintext (weights from the middle and the end of the file).
    markers = [plain[len(plain) // 2 : len(plain) // 2 + 64], plain[-4096:-4032]]
    encrypt_example(repository, encryption_key)
    watched = (repository, Path(tempfile.gettempdir()), Path.cwd() / ".pytest_cache")
    before = snapshot(*watched)
    async with serving(make_settings(repository, key_file=encryption_key)) as client:
        assert (await client.get(f"/v2/models/{EXAMPLE}/ready")).status_code == 200
        after = snapshot(*watched)
    changed = [p for p, stat in after.items() if before.get(p) != stat and p.exists()]
    for path in changed:
        if path.stat().st_size < 512 * 1024 * 1024:
            data = path.read_bytes()
            assert not any(marker in data for marker in markers), f"plaintext written to {path}"
    # The repository itself holds only what it held before: no decrypted copy beside the model.
    assert sorted(p for p in after if repository in p.parents) == sorted(
        p for p in before if repository in p.parents
    )


async def test_a_wrong_key_is_refused_naming_the_model_file_and_keys(
    repository: Path, encryption_key: Path, tmp_path: Path
) -> None:
    version = encrypt_example(repository, encryption_key)
    wrong = tmp_path / "wrong.key"
    wrong.write_text(new_key())
    app = Application(make_settings(repository, key_file=wrong))
    with pytest.raises(DecryptionFailed) as caught:
        await app.start()
    await app.stop()
    message = str(caught.value)
    assert message.startswith(f"model '{EXAMPLE}' version 2: {version / 'model.onnx'}")
    assert key_id(read_key_file(encryption_key)) in message
    assert key_id(read_key_file(wrong)) in message


async def test_truncated_ciphertext_is_refused_never_served_as_garbage(
    repository: Path, encryption_key: Path
) -> None:
    version = encrypt_example(repository, encryption_key)
    artifact = version / "model.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-1000])
    app = Application(make_settings(repository, key_file=encryption_key))
    with pytest.raises(DecryptionFailed, match=r"model.onnx: does not authenticate.*truncated"):
        await app.start()
    index = {s.name: s for s in app.registry.index()}
    assert index[EXAMPLE].state is ModelState.UNAVAILABLE
    await app.stop()


async def test_keys_are_read_from_a_mounted_secret_folder_and_the_environment(
    repository: Path, encryption_key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encrypt_example(repository, encryption_key)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "old").write_text(new_key())
    key_text = copy_key(encryption_key, secret / "current")
    async with serving(make_settings(repository, key_dir=secret)) as client:
        assert (await client.get(f"/v2/models/{EXAMPLE}/ready")).status_code == 200
    monkeypatch.setenv("TEST_MODEL_KEY", key_text)
    async with serving(make_settings(repository, key_env="TEST_MODEL_KEY")) as client:
        assert (await client.get(f"/v2/models/{EXAMPLE}/ready")).status_code == 200


def flip_a_byte(folder: Path) -> str:
    path = folder / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return "model.onnx"


def remove_a_file(folder: Path) -> str:
    (folder / "labels-v1.txt").unlink()
    return "labels-v1.txt"


def add_a_file(folder: Path) -> str:
    (folder / "model.onnx.data").write_bytes(b"\x00" * 64)
    return "model.onnx.data"


@pytest.mark.parametrize("tamper", [flip_a_byte, remove_a_file, add_a_file])
async def test_a_tampered_version_never_becomes_ready_under_require(
    repository: Path, signing_key: KeyPair, tamper: Callable[[Path], str]
) -> None:
    unpin(repository)
    version = repository / EXAMPLE / "1"
    (version / "labels-v1.txt").write_text("kept beside the model\n")
    sign_folder(version, signing_key.private)
    named = tamper(version)
    settings = make_settings(
        repository, signing_policy="require", signing_public_key=signing_key.public
    )
    app = Application(settings)
    with pytest.raises(SignatureInvalid) as caught:
        await app.start()
    message = str(caught.value)
    assert message.startswith(f"model '{EXAMPLE}' version 1: ")
    assert named in message
    assert not app.registry.ready
    [status] = [s for s in app.registry.index() if s.name == EXAMPLE]
    assert status.state is ModelState.UNAVAILABLE
    assert named in status.reason
    await app.stop()


async def test_a_signature_by_an_untrusted_key_is_refused_and_shown_in_the_index(
    repository: Path, signing_key: KeyPair, other_signing_key: KeyPair
) -> None:
    model = repository / EXAMPLE
    sign_folder(model / "1", other_signing_key.private)
    yaml = (model / "model.yaml").read_text()
    (model / "model.yaml").write_text(
        yaml + f"signing:\n  policy: require\n  public_key: {signing_key.public}\n"
    )
    app = Application(make_settings(repository))
    app.check()
    transport = httpx.ASGITransport(app=app.rest)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(f"/v2/repository/models/{EXAMPLE}/load")
        assert response.status_code == 400
        assert "was not signed by the trusted public key" in response.json()["error"]
        assert str(model / "1" / "model.sig") in response.json()["error"]
        index = (await client.post("/v2/repository/index")).json()
        [entry] = [e for e in index if e["name"] == EXAMPLE]
        assert entry["state"] == "UNAVAILABLE"
        assert "not signed by the trusted public key" in entry["reason"]
        metadata = await client.get(f"/v2/models/{EXAMPLE}")
        assert metadata.status_code == 503
        assert "not signed by the trusted" in metadata.json()["error"]
    await app.stop()


async def test_a_signed_and_encrypted_model_loads_under_require_and_says_so(
    repository: Path,
    signing_key: KeyPair,
    encryption_key: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    version = encrypt_example(repository, encryption_key)
    sign_folder(version, signing_key.private)
    settings = make_settings(
        repository,
        signing_policy="require",
        signing_public_key=signing_key.public,
        key_file=encryption_key,
    )
    with caplog.at_level(logging.INFO, logger="infership.security"):
        async with serving(settings) as client:
            assert (await client.get(f"/v2/models/{EXAMPLE}/ready")).status_code == 200
    assert f"model '{EXAMPLE}' version 2: signature verified with public key" in caplog.text


async def test_an_unsigned_model_under_warn_serves_and_logs_why(
    repository: Path, signing_key: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        repository, signing_policy="warn", signing_public_key=signing_key.public
    )
    with caplog.at_level(logging.WARNING):
        async with serving(settings) as client:
            assert (await client.get(f"/v2/models/{EXAMPLE}/ready")).status_code == 200
    assert f"model '{EXAMPLE}' version 1: not signed" in caplog.text


def test_an_unreadable_artifact_is_a_configuration_error_naming_it(repository: Path) -> None:
    source = FilesystemRepository(repository).find(EXAMPLE)
    artifact = source.artifact(1)
    artifact.unlink()
    artifact.mkdir()  # opening a folder fails like an unreadable file, even for root
    guard = ModelGuard(ModelSecuritySettings())
    with pytest.raises(ConfigError, match=rf"version 1: cannot read {artifact}"):
        guard.read_artifact(source, 1)
