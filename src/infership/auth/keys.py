"""API keys: where they come from, how they are kept, and how a presented token is checked.

Only SHA-256 digests of keys are kept in memory. Keys are long random strings (``new_key``), so
a plain digest is enough: a slow password hash would protect guessable secrets, and these are
not guessable, while it would cost every request milliseconds. A presented token is hashed and
compared against every known digest with ``hmac.compare_digest`` and no early exit, so the time
taken does not depend on how much of any digest matched.

Keys come from three places, merged:

- a keys file (YAML; also what a mounted Kubernetes Secret provides), re-read when it changes,
  so keys are added and revoked without a restart;
- ``AuthSettings.tokens``: plaintext keys from the environment, each with the ``infer`` scope;
- ``AuthSettings.admin_tokens``: plaintext keys from the environment with every scope.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infership.configfile import load_yaml
from infership.errors import ConfigError, Forbidden, Unauthenticated
from infership.settings import RateLimit

log = logging.getLogger(__name__)

KEY_PREFIX = "isk_"  # makes leaked keys easy to find with secret scanners


class Scope(enum.StrEnum):
    INFER = "infer"
    """Inference, model metadata and readiness."""

    METRICS = "metrics"
    """/metrics and health endpoints, when those are protected."""

    ADMIN = "admin"
    """The repository API (index, load, unload); implies every other scope."""


def new_key() -> str:
    """A fresh API key: the prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyEntry(BaseModel):
    """One key of the keys file. Give ``sha256`` (preferred) or ``key`` (e.g. from a Secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    """Who holds the key; appears in logs and metrics instead of the key."""

    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    key: str | None = Field(None, min_length=16)
    scopes: tuple[Scope, ...] = (Scope.INFER,)
    expires: datetime | None = None
    rate_limit: RateLimit | None = None

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2027-01-31T00:00:00Z")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> KeyEntry:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError("give exactly one of 'sha256' and 'key'")
        return self


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: tuple[KeyEntry, ...] = ()


@dataclass(frozen=True)
class Principal:
    """Who made a request, once authenticated."""

    name: str
    scopes: frozenset[Scope]
    rate_limit: RateLimit | None = None

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes


@dataclass(frozen=True)
class _Known:
    digest: bytes
    principal: Principal
    expires: datetime | None


ANONYMOUS = Principal("anonymous", frozenset(Scope))
"""The caller when authentication is off: it may do everything the server's settings allow."""


def parse_keys_file(path: Path) -> KeysFile:
    """Read and validate a keys file. Raises ConfigError naming the file and the field."""
    keys = load_yaml(path, KeysFile)
    names = [entry.name for entry in keys.keys]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: duplicate key names: {', '.join(duplicates)}")
    return keys


def _known(entries: Iterable[KeyEntry]) -> list[_Known]:
    known = []
    for entry in entries:
        hexdigest = entry.sha256 if entry.sha256 is not None else digest(entry.key or "")
        principal = Principal(entry.name, frozenset(entry.scopes), entry.rate_limit)
        known.append(_Known(bytes.fromhex(hexdigest), principal, entry.expires))
    return known


class KeyStore:
    """The keys a server accepts, re-read from the keys file when the file changes."""

    def __init__(
        self,
        *,
        keys_file: Path | None = None,
        tokens: Iterable[str] = (),
        admin_tokens: Iterable[str] = (),
        reload_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.keys_file = keys_file
        self._fixed = [
            _Known(bytes.fromhex(digest(t)), Principal(f"env-{i}", frozenset({Scope.INFER})), None)
            for i, t in enumerate(tokens)
        ] + [
            _Known(bytes.fromhex(digest(t)), Principal(f"env-admin-{i}", frozenset(Scope)), None)
            for i, t in enumerate(admin_tokens)
        ]
        self._reload_interval_s = reload_interval_s
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._file_keys: list[_Known] = []
        self._file_stamp: tuple[int, int] | None = None
        self._checked_at = clock()
        if keys_file is not None:
            self._file_keys = _known(parse_keys_file(keys_file).keys)
            self._file_stamp = self._stamp()

    @property
    def enabled(self) -> bool:
        return self.keys_file is not None or bool(self._fixed)

    def authenticate(self, token: str | None, scope: Scope) -> Principal:
        """The principal ``token`` belongs to, if it may act in ``scope``.

        Raises Unauthenticated (no, unknown or expired key) or Forbidden (scope missing).
        Messages name the key's holder, never the key.
        """
        if not self.enabled:
            return ANONYMOUS
        if not token:
            raise Unauthenticated(
                "this server requires an API key: send 'Authorization: Bearer <key>'"
            )
        presented = hashlib.sha256(token.encode()).digest()
        match: _Known | None = None
        for known in self._fixed + self._current_file_keys():
            # No early exit: the loop takes the same time wherever (or whether) a key matches.
            if hmac.compare_digest(presented, known.digest):
                match = known
        if match is None:
            raise Unauthenticated("the API key is not valid")
        if match.expires is not None and self._now() >= match.expires:
            raise Unauthenticated(f"the API key of '{match.principal.name}' has expired")
        if not match.principal.allows(scope):
            raise Forbidden(f"the API key of '{match.principal.name}' lacks the '{scope}' scope")
        return match.principal

    def reload(self) -> None:
        """Re-read the keys file now. A broken file keeps the previous keys (and logs why):
        a typo while editing must not lock every client out."""
        if self.keys_file is None:
            return
        try:
            keys = _known(parse_keys_file(self.keys_file).keys)
        except ConfigError as exc:
            log.error("keeping the previous API keys: %s", exc)
            return
        with self._lock:
            self._file_keys = keys
            self._file_stamp = self._stamp()
        log.info("API keys reloaded from %s: %d keys", self.keys_file, len(keys))

    def _current_file_keys(self) -> list[_Known]:
        if (
            self.keys_file is not None
            and self._clock() - self._checked_at >= self._reload_interval_s
        ):
            self._checked_at = self._clock()
            if self._stamp() != self._file_stamp:
                self.reload()
        return self._file_keys

    def _stamp(self) -> tuple[int, int] | None:
        # A Kubernetes Secret volume swaps a symlink; stat follows it, so mtime and inode change.
        assert self.keys_file is not None
        try:
            stat = os.stat(self.keys_file)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_ino)
