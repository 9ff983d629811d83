import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from click.testing import CliRunner

from infership.auth import KeyStore, Scope
from infership.cli import main


def test_a_new_key_and_its_entry_work_together_in_a_keys_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["keys", "new", "--name", "ci", "--scope", "infer", "--expires-in", "90d"]
    )
    assert result.exit_code == 0, result.output
    key = result.stderr.split("\n")[1].strip()
    assert key.startswith("isk_")
    assert key not in result.stdout  # stdout is what gets pasted into a file: no key there
    entries = yaml.safe_load(result.stdout)
    expires = datetime.fromisoformat(entries[0]["expires"])
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)

    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"keys": entries}), encoding="utf-8")
    assert KeyStore(keys_file=keys_file).authenticate(key, Scope.INFER).name == "ci"


def test_hash_prints_the_digest_the_keys_file_expects() -> None:
    result = CliRunner().invoke(main, ["keys", "hash"], input="isk_abc\n")
    assert result.exit_code == 0
    assert result.stdout.strip() == hashlib.sha256(b"isk_abc").hexdigest()


def test_a_malformed_lifetime_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["keys", "new", "--name", "x", "--expires-in", "soon"])
    assert result.exit_code == 2
    assert "use a number and h, d or w" in result.output
