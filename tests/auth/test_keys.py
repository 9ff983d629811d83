from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infership.auth import ANONYMOUS, KeyStore, Scope, digest, new_key
from infership.errors import ConfigError, Forbidden, Unauthenticated


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def write_keys(path: Path, *entries: str) -> Path:
    path.write_text("keys:\n" + "".join(entries), encoding="utf-8")
    return path


def entry(name: str, key: str, scopes: str = "[infer]", extra: str = "") -> str:
    return f"  - name: {name}\n    sha256: {digest(key)}\n    scopes: {scopes}\n{extra}"


def test_without_any_key_source_every_caller_is_anonymous() -> None:
    store = KeyStore()
    assert not store.enabled
    assert store.authenticate(None, Scope.ADMIN) is ANONYMOUS


def test_a_key_from_the_file_authenticates_its_holder_with_its_scopes(tmp_path: Path) -> None:
    key = new_key()
    store = KeyStore(keys_file=write_keys(tmp_path / "keys.yaml", entry("ci-bot", key)))
    principal = store.authenticate(key, Scope.INFER)
    assert principal.name == "ci-bot"
    assert principal.scopes == {Scope.INFER}


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "requires an API key"),
        ("", "requires an API key"),
        ("isk_not-a-key-we-know", "not valid"),
    ],
)
def test_missing_or_unknown_keys_are_unauthenticated(
    tmp_path: Path, token: str | None, message: str
) -> None:
    store = KeyStore(keys_file=write_keys(tmp_path / "k.yaml", entry("a", new_key())))
    with pytest.raises(Unauthenticated, match=message):
        store.authenticate(token, Scope.INFER)


def test_an_expired_key_is_refused_and_named(tmp_path: Path) -> None:
    key = new_key()
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    keys = write_keys(tmp_path / "k.yaml", entry("old", key, extra=f"    expires: {expires}\n"))
    now = [expires - timedelta(seconds=1)]
    store = KeyStore(keys_file=keys, now=lambda: now[0])
    assert store.authenticate(key, Scope.INFER).name == "old"
    now[0] = expires
    with pytest.raises(Unauthenticated, match="'old' has expired"):
        store.authenticate(key, Scope.INFER)


def test_a_key_without_the_scope_is_forbidden_and_admin_implies_every_scope(
    tmp_path: Path,
) -> None:
    infer, admin = new_key(), new_key()
    store = KeyStore(
        keys_file=write_keys(
            tmp_path / "k.yaml", entry("user", infer), entry("ops", admin, "[admin]")
        )
    )
    with pytest.raises(Forbidden, match="'user' lacks the 'admin' scope"):
        store.authenticate(infer, Scope.ADMIN)
    for scope in Scope:
        assert store.authenticate(admin, scope).name == "ops"


def test_errors_never_contain_the_presented_key(tmp_path: Path) -> None:
    key = new_key()
    store = KeyStore(keys_file=write_keys(tmp_path / "k.yaml", entry("user", key)))
    for token, scope in [(key, Scope.ADMIN), (key + "x", Scope.INFER)]:
        with pytest.raises((Unauthenticated, Forbidden)) as caught:
            store.authenticate(token, scope)
        assert key not in str(caught.value)


def test_plaintext_keys_from_a_secret_are_accepted_and_kept_only_hashed(tmp_path: Path) -> None:
    key = new_key()
    keys = tmp_path / "k.yaml"
    keys.write_text(f"keys:\n  - name: mounted\n    key: {key}\n", encoding="utf-8")
    store = KeyStore(keys_file=keys)
    assert store.authenticate(key, Scope.INFER).name == "mounted"
    assert key not in repr(vars(store))


def test_environment_tokens_get_infer_and_admin_tokens_every_scope() -> None:
    user, admin = new_key(), new_key()
    store = KeyStore(tokens=[user], admin_tokens=[admin])
    assert store.enabled
    assert store.authenticate(user, Scope.INFER).scopes == {Scope.INFER}
    with pytest.raises(Forbidden):
        store.authenticate(user, Scope.ADMIN)
    assert store.authenticate(admin, Scope.ADMIN).scopes == set(Scope)


def test_the_keys_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    old, new = new_key(), new_key()
    clock = Clock()
    keys = write_keys(tmp_path / "k.yaml", entry("old", old))
    store = KeyStore(keys_file=keys, clock=clock, reload_interval_s=1.0)
    assert store.authenticate(old, Scope.INFER).name == "old"

    # Rotate the way a Secret volume does: write a new file and swap it in.
    replacement = write_keys(tmp_path / "k2.yaml", entry("new", new))
    replacement.replace(keys)
    clock.t = 0.5  # within the interval: no stat, the old key still works
    assert store.authenticate(old, Scope.INFER).name == "old"
    clock.t = 1.5
    assert store.authenticate(new, Scope.INFER).name == "new"
    with pytest.raises(Unauthenticated):
        store.authenticate(old, Scope.INFER)


def test_a_broken_keys_file_on_reload_keeps_the_previous_keys(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key()
    keys = write_keys(tmp_path / "k.yaml", entry("user", key))
    store = KeyStore(keys_file=keys)
    keys.write_text("keys: [{name: x}]\n", encoding="utf-8")
    store.reload()
    assert store.authenticate(key, Scope.INFER).name == "user"
    assert "keeping the previous API keys" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("keys: [", "not valid YAML"),
        ("keys:\n  - name: a\n", "exactly one of 'sha256' and 'key'"),
        ("keys:\n  - name: a\n    sha256: abc\n", "field 'keys.0.sha256'"),
        (
            "keys:\n  - {name: a, key: 0123456789abcdef, scopes: [root]}\n",
            "field 'keys.0.scopes.0'",
        ),
        (
            "keys:\n  - {name: a, key: 0123456789abcdef, expires: 2030-01-01T00:00:00}\n",
            "time zone",
        ),
        (
            "keys:\n  - {name: a, key: 0123456789abcdef}\n  - {name: a, key: 0123456789abcdeg}\n",
            "duplicate key names: a",
        ),
        ("tokens: []\n", "field 'tokens'"),
    ],
)
def test_an_invalid_keys_file_is_a_config_error_naming_file_and_field(
    tmp_path: Path, content: str, message: str
) -> None:
    keys = tmp_path / "k.yaml"
    keys.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as caught:
        KeyStore(keys_file=keys)
    assert str(keys) in str(caught.value)


def test_a_missing_keys_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read: No such file"):
        KeyStore(keys_file=tmp_path / "absent.yaml")
