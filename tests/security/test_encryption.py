from __future__ import annotations

import os
from pathlib import Path

import pytest

from infership.errors import DecryptionFailed
from infership.security.encryption import (
    HEADER_BYTES,
    MAGIC,
    decrypt,
    encrypt,
    encrypt_folder,
    is_encrypted,
    read_header,
)
from infership.security.keys import KeyRing, key_id, parse_key

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
WHERE = Path("models/m/1/model.onnx")


def ring(*keys: bytes) -> KeyRing:
    return KeyRing({key_id(k): k for k in keys}, {key_id(k): "test" for k in keys})


def test_encrypted_bytes_decrypt_to_the_plaintext() -> None:
    plaintext = os.urandom(10_000)
    data = encrypt(plaintext, KEY, "model.onnx")
    assert data.startswith(MAGIC)
    assert plaintext not in data
    assert decrypt(data, ring(OTHER, KEY), "model.onnx", WHERE) == plaintext


def test_header_names_the_format_version_and_key_and_each_file_gets_its_own_nonce() -> None:
    first = read_header(encrypt(b"same", KEY, "a"), WHERE)
    second = read_header(encrypt(b"same", KEY, "a"), WHERE)
    assert first.version == 1
    assert first.key_id == key_id(KEY) == second.key_id
    assert len(first.nonce) == 12
    assert first.nonce != second.nonce


def test_a_file_encrypted_with_another_key_is_refused_naming_both_keys() -> None:
    data = encrypt(b"weights", KEY, "model.onnx")
    with pytest.raises(DecryptionFailed) as caught:
        decrypt(data, ring(OTHER), "model.onnx", WHERE)
    message = str(caught.value)
    assert str(WHERE) in message
    assert key_id(KEY) in message
    assert key_id(OTHER) in message


def test_no_configured_key_says_how_to_give_one() -> None:
    data = encrypt(b"weights", KEY, "model.onnx")
    with pytest.raises(DecryptionFailed, match=r"none configured.*\$INFERSHIP_MODEL_KEY"):
        decrypt(data, KeyRing(key_env="INFERSHIP_MODEL_KEY"), "model.onnx", WHERE)


@pytest.mark.parametrize("cut", [1, 16, 1000])
def test_truncated_ciphertext_does_not_authenticate(cut: int) -> None:
    data = encrypt(os.urandom(5000), KEY, "model.onnx")
    with pytest.raises(DecryptionFailed, match="modified, truncated or renamed"):
        decrypt(data[:-cut], ring(KEY), "model.onnx", WHERE)


def test_a_file_cut_inside_its_header_is_called_truncated() -> None:
    data = encrypt(b"weights", KEY, "model.onnx")
    with pytest.raises(DecryptionFailed, match=r"truncated: 20 bytes"):
        decrypt(data[:20], ring(KEY), "model.onnx", WHERE)


@pytest.mark.parametrize("offset", [len(MAGIC) + 9, HEADER_BYTES, HEADER_BYTES + 500, -1])
def test_a_flipped_byte_in_nonce_ciphertext_or_tag_does_not_authenticate(offset: int) -> None:
    data = bytearray(encrypt(os.urandom(1000), KEY, "model.onnx"))
    data[offset] ^= 0x01
    with pytest.raises(DecryptionFailed, match="does not authenticate"):
        decrypt(bytes(data), ring(KEY), "model.onnx", WHERE)


def test_a_renamed_file_does_not_authenticate() -> None:
    data = encrypt(b"weights", KEY, "model.onnx")
    with pytest.raises(DecryptionFailed, match="renamed"):
        decrypt(data, ring(KEY), "other.onnx", WHERE)


def test_an_unknown_format_version_is_refused_with_what_to_do() -> None:
    data = bytearray(encrypt(b"weights", KEY, "model.onnx"))
    data[len(MAGIC)] = 7
    with pytest.raises(DecryptionFailed, match="format version 7 is not supported"):
        decrypt(bytes(data), ring(KEY), "model.onnx", WHERE)


def test_plain_bytes_are_not_mistaken_for_an_encrypted_file(tmp_path: Path) -> None:
    with pytest.raises(DecryptionFailed, match="not an infership encrypted file"):
        read_header(b"\x08\x07plain onnx", WHERE)
    plain = tmp_path / "plain"
    plain.write_bytes(b"\x08\x07plain onnx")
    assert not is_encrypted(plain)


def make_version(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"PLAINTEXT-MARKER model")
    (folder / "sub" / "vocab.txt").write_bytes(b"PLAINTEXT-MARKER vocab")
    (folder / "model.sig").write_text("{}")
    return folder


def test_encrypt_folder_encrypts_every_file_and_leaves_the_old_signature_out(
    tmp_path: Path,
) -> None:
    source = make_version(tmp_path / "1")
    written = encrypt_folder(source, tmp_path / "2", KEY)
    assert sorted(p.relative_to(tmp_path / "2").as_posix() for p in written) == [
        "model.onnx",
        "sub/vocab.txt",
    ]
    for path in written:
        data = path.read_bytes()
        assert b"PLAINTEXT-MARKER" not in data
        name = path.relative_to(tmp_path / "2").as_posix()
        assert decrypt(data, ring(KEY), name, path).startswith(b"PLAINTEXT-MARKER")
    assert not (tmp_path / "2" / "model.sig").exists()


def test_re_encryption_under_a_new_key_needs_the_old_key(tmp_path: Path) -> None:
    encrypt_folder(make_version(tmp_path / "1"), tmp_path / "2", KEY)
    with pytest.raises(DecryptionFailed, match=key_id(KEY)):
        encrypt_folder(tmp_path / "2", tmp_path / "3", OTHER)
    encrypt_folder(tmp_path / "2", tmp_path / "4", OTHER, ring(KEY))
    data = (tmp_path / "4" / "model.onnx").read_bytes()
    assert read_header(data, WHERE).key_id == key_id(OTHER)
    assert decrypt(data, ring(OTHER), "model.onnx", WHERE) == b"PLAINTEXT-MARKER model"


def test_encrypt_folder_never_overwrites_a_folder_in_use(tmp_path: Path) -> None:
    source = make_version(tmp_path / "1")
    with pytest.raises(ValueError, match="not empty"):
        encrypt_folder(source, source, KEY)


def test_encrypt_folder_refuses_links_and_empty_or_missing_folders(tmp_path: Path) -> None:
    source = make_version(tmp_path / "1")
    (source / "link").symlink_to(source / "model.onnx")
    with pytest.raises(ValueError, match="only regular files"):
        encrypt_folder(source, tmp_path / "2", KEY)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        encrypt_folder(tmp_path / "empty", tmp_path / "3", KEY)
    with pytest.raises(ValueError, match="is not a folder"):
        encrypt_folder(tmp_path / "missing", tmp_path / "4", KEY)


def test_a_file_over_the_format_limit_is_refused_before_encryption() -> None:
    class Huge(bytes):
        def __len__(self) -> int:
            return 2**31

    with pytest.raises(ValueError, match="over the 2 GiB"):
        encrypt(Huge(), KEY, "model.onnx")


def test_parse_key_round_trips_a_generated_key() -> None:
    from infership.security.keys import new_key

    assert len(parse_key(new_key(), "test")) == 32
