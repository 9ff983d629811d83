"""The whole flow through the commands: keygen, encrypt, sign, verify."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner
from keyfiles import make_certified_key

from infership.cli import main
from infership.security.encryption import is_encrypted


def run(*args: str | Path, code: int = 0) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def make_model(root: Path) -> Path:
    model = root / "m"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"weights" * 100)
    (model / "model.yaml").write_text("runtime: onnx\n")
    return model


def test_keygen_encrypt_sign_verify(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    assert "key id" in run("keygen", "encryption", tmp_path / "model.key")
    run("keygen", "signing", tmp_path / "signer")
    for secret in ("model.key", "signer.pem"):
        assert stat.S_IMODE((tmp_path / secret).stat().st_mode) == 0o600
    output = run("encrypt", model / "1", "-o", model / "2", "--key-file", tmp_path / "model.key")
    assert "1 file(s) encrypted" in output
    assert is_encrypted(model / "2" / "model.onnx")
    output = run("sign", model, "--private-key", tmp_path / "signer.pem")
    assert f"signed {model / '1'}" in output
    assert f"signed {model / '2'}" in output
    output = run("verify", model, "--public-key", tmp_path / "signer.pub")
    assert f"verified {model / '2'}" in output
    (model / "2" / "extra").write_text("x")
    output = run("verify", model / "2", "--public-key", tmp_path / "signer.pub", code=1)
    assert "extra" in output


def test_re_encryption_for_key_rotation(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    run("keygen", "encryption", tmp_path / "old.key")
    run("keygen", "encryption", tmp_path / "new.key")
    run("encrypt", model / "1", "-o", model / "2", "--key-file", tmp_path / "old.key")
    output = run(
        "encrypt", model / "2", "-o", model / "3", "--key-file", tmp_path / "new.key", code=2
    )
    assert "not among the configured keys" in output
    run(
        "encrypt", model / "2", "-o", model / "4", "--key-file", tmp_path / "new.key",
        "--decrypt-key-file", tmp_path / "old.key",
    )  # fmt: skip
    assert is_encrypted(model / "4" / "model.onnx")


def test_certificate_signing_through_the_command(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    cert = make_certified_key(tmp_path, "team")
    run(
        "sign", model / "1", "--private-key", cert.private, "--certificate", cert.certificate,
        "--certificate-chain", cert.ca,
    )  # fmt: skip
    run("verify", model / "1", "--certificate-chain", cert.ca)


def test_command_errors_are_clear(tmp_path: Path) -> None:
    model = make_model(tmp_path)
    run("keygen", "encryption", tmp_path / "k")
    assert "not overwriting" in run("keygen", "encryption", tmp_path / "k", code=2)
    assert "one of them" in run("verify", model / "1", code=2)
    assert "not signed" in run("verify", model / "1", "--public-key", tmp_path / "k", code=1)
    (model / "1" / "model.sig").write_text("{}")
    assert "cannot use public key" in run(
        "verify", model / "1", "--public-key", tmp_path / "k", code=2
    )
    assert "not empty" in run(
        "encrypt", model / "1", "-o", model / "1", "--key-file", tmp_path / "k", code=2
    )
    (tmp_path / "bad.pem").write_text("nope")
    assert "must be 32 bytes" in run(
        "encrypt", model / "1", "-o", model / "9", "--key-file", tmp_path / "bad.pem", code=2
    )
    assert "cannot sign with this key" in run(
        "sign", model / "1", "--private-key", tmp_path / "bad.pem", code=2
    )
    assert "$NO_SUCH_VARIABLE is not set" in run(
        "sign", model, "--private-key", tmp_path / "bad.pem", "--password-env",
        "NO_SUCH_VARIABLE", code=2,
    )  # fmt: skip
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "model.yaml").write_text("runtime: onnx\n")
    assert "no version folders" in run(
        "sign", tmp_path / "empty", "--private-key", tmp_path / "bad.pem", code=2
    )
