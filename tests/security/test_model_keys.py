from __future__ import annotations

import base64
from pathlib import Path

import pytest

from infership.errors import ConfigError
from infership.security.keys import KeyRing, key_id, new_key, parse_key, read_key_file


def test_keys_come_from_a_file_a_variable_and_every_file_of_a_secret_folder(
    tmp_path: Path,
) -> None:
    file_key, env_key, old, new = (new_key() for _ in range(4))
    (tmp_path / "model.key").write_text(file_key + "\n")
    # A mounted Kubernetes Secret: files are links into a hidden, versioned folder.
    secret = tmp_path / "secret"
    data = secret / "..2026_01_01_00_00_00.000"
    data.mkdir(parents=True)
    (data / "old").write_text(old)
    (data / "new").write_text(new)
    (secret / "..data").symlink_to(data.name)
    (secret / "old").symlink_to("..data/old")
    (secret / "new").symlink_to("..data/new")

    ring = KeyRing.gather(
        key_files=[tmp_path / "model.key"],
        key_env="MODEL_KEY",
        key_dir=secret,
        environ={"MODEL_KEY": env_key},
    )

    expected = {key_id(parse_key(k, "k")) for k in (file_key, env_key, old, new)}
    assert set(ring.keys) == expected
    assert ring.sources[key_id(parse_key(env_key, "k"))] == "$MODEL_KEY"
    assert ring.sources[key_id(parse_key(new, "k"))] == str(secret / "new")


def test_an_unset_variable_and_no_sources_give_an_empty_ring() -> None:
    ring = KeyRing.gather(key_env="MODEL_KEY", environ={})
    assert not ring.keys
    assert "none configured" in ring.describe()


def test_a_bad_key_names_its_source_and_never_shows_the_key(tmp_path: Path) -> None:
    short = base64.b64encode(b"sixteen byte key").decode()
    with pytest.raises(ConfigError) as caught:
        parse_key(short, "$MODEL_KEY")
    assert "$MODEL_KEY" in str(caught.value)
    assert "32 bytes" in str(caught.value)
    assert short not in str(caught.value)
    with pytest.raises(ConfigError, match=r"\$MODEL_KEY: not a base64"):
        parse_key("not base64 at all!", "$MODEL_KEY")


def test_unreadable_key_files_and_missing_key_folders_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the encryption key"):
        read_key_file(tmp_path / "missing.key")
    (tmp_path / "binary.key").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not a text file"):
        read_key_file(tmp_path / "binary.key")
    with pytest.raises(ConfigError, match="key folder does not exist"):
        KeyRing.gather(key_dir=tmp_path / "no-such-secret")


def test_key_ids_are_stable_fingerprints_that_differ_per_key() -> None:
    key = bytes(32)
    assert key_id(key) == key_id(bytes(32))
    assert len(key_id(key)) == 16
    assert key_id(key) != key_id(bytes(31) + b"\x01")
