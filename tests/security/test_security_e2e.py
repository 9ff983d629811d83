"""`infership serve` in its own process: a signed, encrypted model with the key from a variable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from keyfiles import write_encryption_key, write_signing_key

from conftest import EXAMPLE, free_port, serve_command, start_server, stop_server
from infership.app import EXAMPLE_REPOSITORY
from infership.security.encryption import encrypt_folder
from infership.security.keys import key_id, read_key_file
from infership.security.signing import sign_folder


@pytest.mark.e2e
def test_serve_verifies_and_decrypts_then_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chelsea: bytes
) -> None:
    repository = tmp_path / "models"
    model = repository / EXAMPLE
    model.mkdir(parents=True)
    for name in ("model.yaml", "labels.txt"):
        shutil.copy(EXAMPLE_REPOSITORY / EXAMPLE / name, model)
    manifest = model / "model.yaml"
    manifest.write_text(manifest.read_text().replace("  1/model.onnx:", "  # 1/model.onnx:"))
    key_file = write_encryption_key(tmp_path / "model.key")
    signer = write_signing_key(tmp_path, "signer")
    encrypt_folder(EXAMPLE_REPOSITORY / EXAMPLE / "1", model / "1", read_key_file(key_file))
    sign_folder(model / "1", signer.private)
    monkeypatch.setenv("INFERSHIP_MODEL_KEY", key_file.read_text())

    server = start_server(
        str(repository),
        "--no-grpc",
        "--signing-policy",
        "require",
        "--signing-public-key",
        str(signer.public),
        timeout=60,
    )
    try:
        answer = httpx.post(f"{server.url}/predict", files={"img": ("cat.jpg", chelsea)})
        assert answer.status_code == 200
        assert answer.json()["predictions"][0]["top_k"][0]["label"] == "Egyptian cat"
    finally:
        output = stop_server(server)
    assert f"model '{EXAMPLE}' version 1: signature verified with public key" in output
    key = key_id(read_key_file(key_file))
    assert f"decrypted model.onnx in memory with key {key}" in output


@pytest.mark.e2e
def test_serve_refuses_to_start_with_a_tampered_model(tmp_path: Path, chelsea: bytes) -> None:
    repository = tmp_path / "models"
    shutil.copytree(EXAMPLE_REPOSITORY, repository)
    signer = write_signing_key(tmp_path, "signer")
    sign_folder(repository / EXAMPLE / "1", signer.private)
    (repository / EXAMPLE / "1" / "notes.txt").write_text("added after signing")
    refused = subprocess.run(
        serve_command(
            str(repository), "--no-grpc", "--port", str(free_port()), "--signing-policy",
            "require", "--signing-public-key", str(signer.public),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2
    assert f"model '{EXAMPLE}' version 1: files in" in refused.stderr
    assert "notes.txt" in refused.stderr
