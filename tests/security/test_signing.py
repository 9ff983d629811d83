from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from keyfiles import KeyPair, make_certified_key, write_signing_key

from infership.errors import ConfigError, SignatureInvalid
from infership.security.signing import (
    SIGNATURE_NAME,
    TrustRoots,
    check_folder,
    sign_folder,
    strictest,
    verify_folder,
    version_folders,
)


@pytest.fixture
def signing_key(tmp_path: Path) -> KeyPair:
    return write_signing_key(tmp_path, "signer")


@pytest.fixture
def other_signing_key(tmp_path: Path) -> KeyPair:
    return write_signing_key(tmp_path, "stranger")


def make_version(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"weights " * 100)
    (folder / "tokenizer.json").write_text('{"vocab": []}')
    return folder


def test_a_signed_folder_verifies_and_the_signature_is_a_sigstore_bundle(
    tmp_path: Path, signing_key: KeyPair
) -> None:
    folder = make_version(tmp_path / "1")
    signature = sign_folder(folder, signing_key.private)
    assert signature == folder / SIGNATURE_NAME
    bundle = json.loads(signature.read_text())
    assert bundle["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    assert bundle["verificationMaterial"]["tlogEntries"] == []  # offline: no log entry
    verify_folder(folder, TrustRoots(public_key=signing_key.public), "model 'm' version 1")


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (lambda f: (f / "model.onnx").write_bytes(b"weights " * 99 + b"weightz "), "model.onnx"),
        (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json"),
        (lambda f: (f / "payload.py").write_text("import os"), "payload.py"),
    ],
    ids=["changed", "removed", "added"],
)
def test_a_changed_removed_or_added_file_breaks_the_signature_naming_it(
    tmp_path: Path, signing_key: KeyPair, tamper: object, named: str
) -> None:
    folder = make_version(tmp_path / "1")
    sign_folder(folder, signing_key.private)
    tamper(folder)  # type: ignore[operator]
    with pytest.raises(SignatureInvalid) as caught:
        verify_folder(folder, TrustRoots(public_key=signing_key.public), "model 'm' version 1")
    message = str(caught.value)
    assert message.startswith("model 'm' version 1: ")
    assert named in message
    assert str(folder / SIGNATURE_NAME) in message


def test_a_signature_by_another_key_is_refused(
    tmp_path: Path, signing_key: KeyPair, other_signing_key: KeyPair
) -> None:
    folder = make_version(tmp_path / "1")
    sign_folder(folder, other_signing_key.private)
    with pytest.raises(SignatureInvalid, match="was not signed by the trusted public key"):
        verify_folder(folder, TrustRoots(public_key=signing_key.public), "model 'm' version 1")


def test_an_unsigned_folder_is_refused_with_how_to_sign_it(
    tmp_path: Path, signing_key: KeyPair
) -> None:
    folder = make_version(tmp_path / "1")
    with pytest.raises(SignatureInvalid, match=r"not signed: .*model.sig does not exist.*sign"):
        verify_folder(folder, TrustRoots(public_key=signing_key.public), "model 'm' version 1")


def test_a_corrupt_signature_file_is_refused(tmp_path: Path, signing_key: KeyPair) -> None:
    folder = make_version(tmp_path / "1")
    (folder / SIGNATURE_NAME).write_text("{not json")
    with pytest.raises(SignatureInvalid, match="does not verify with public key"):
        verify_folder(folder, TrustRoots(public_key=signing_key.public), "model 'm' version 1")


def test_certificate_signatures_verify_against_their_ca_only(tmp_path: Path) -> None:
    folder = make_version(tmp_path / "1")
    ours = make_certified_key(tmp_path, "ours")
    theirs = make_certified_key(tmp_path, "theirs")
    with pytest.raises(ValueError, match="give the certificate chain"):
        sign_folder(folder, ours.private, certificate=ours.certificate)
    sign_folder(folder, ours.private, certificate=ours.certificate, certificate_chain=[ours.ca])
    verify_folder(folder, TrustRoots(certificate_chain=(ours.ca,)), "model 'm' version 1")
    with pytest.raises(SignatureInvalid, match="does not verify with certificates"):
        verify_folder(folder, TrustRoots(certificate_chain=(theirs.ca,)), "model 'm' version 1")


def test_verification_without_trust_roots_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a public key or CA certificates"):
        verify_folder(make_version(tmp_path / "1"), TrustRoots(), "model 'm' version 1")


def test_an_unusable_public_key_is_a_configuration_error(tmp_path: Path) -> None:
    folder = make_version(tmp_path / "1")
    (tmp_path / "bad.pub").write_text("not a key")
    (folder / SIGNATURE_NAME).write_text("{}")
    with pytest.raises(ConfigError, match=r"cannot use public key .*bad.pub"):
        verify_folder(folder, TrustRoots(public_key=tmp_path / "bad.pub"), "model 'm' version 1")


def test_signing_with_something_that_is_not_a_key_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ValueError, match=r"bad.pem: cannot sign with this key"):
        sign_folder(make_version(tmp_path / "1"), tmp_path / "bad.pem")
    with pytest.raises(ValueError, match="is not a folder"):
        sign_folder(tmp_path / "missing", tmp_path / "bad.pem")


def test_policy_off_checks_nothing_warn_logs_and_require_refuses(
    tmp_path: Path, signing_key: KeyPair, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_version(tmp_path / "1")
    trust = TrustRoots(public_key=signing_key.public)
    assert "not checked" in check_folder(folder, "off", trust, "model 'm' version 1")
    with caplog.at_level(logging.WARNING):
        outcome = check_folder(folder, "warn", trust, "model 'm' version 1")
    assert "not signed" in outcome
    assert "serving it anyway" in caplog.text
    with pytest.raises(SignatureInvalid):
        check_folder(folder, "require", trust, "model 'm' version 1")
    sign_folder(folder, signing_key.private)
    assert "verified" in check_folder(folder, "require", trust, "model 'm' version 1")


def test_a_model_can_tighten_the_server_policy_but_never_relax_it() -> None:
    assert strictest("off", "require") == "require"
    assert strictest("require", "off") == "require"
    assert strictest("warn", "off") == "warn"


def test_a_model_folder_stands_for_each_of_its_versions(tmp_path: Path) -> None:
    model = tmp_path / "m"
    for version in ("10", "2"):
        make_version(model / version)
    (model / "model.yaml").write_text("runtime: onnx\n")
    (model / "notes").mkdir()
    assert version_folders(model) == [model / "2", model / "10"]
    assert version_folders(model / "2") == [model / "2"]
