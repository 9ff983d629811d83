"""What the loader asks before it lets a model version run: is it signed as the policy demands,
and what are its artifact's bytes (decrypted in memory when the file is encrypted)."""

from __future__ import annotations

import logging
import time

from infership.errors import ConfigError
from infership.repository import ModelSource
from infership.security.encryption import decrypt, is_encrypted, read_header
from infership.security.keys import KeyRing
from infership.security.signing import TrustRoots, check_folder, strictest
from infership.settings import ModelSecuritySettings

log = logging.getLogger(__name__)


class ModelGuard:
    """Applies the server's ``model_security`` settings and each model's ``signing:`` section."""

    def __init__(self, settings: ModelSecuritySettings) -> None:
        self.settings = settings

    def check_signature(self, source: ModelSource, version: int) -> str:
        """Verify ``version``'s folder as the effective policy says, before any of it is read
        for execution. Returns what happened; raises SignatureInvalid or ConfigError under
        ``require``."""
        policy = strictest(self.settings.signing_policy, source.manifest.signing.policy)
        return check_folder(
            source.directory / str(version), policy, self.trust(source), _what(source, version)
        )

    def trust(self, source: ModelSource) -> TrustRoots:
        """The server's trust roots when it has any (they cannot be swapped by editing the
        repository), else those named in the model's ``model.yaml``."""
        settings = self.settings
        if settings.signing_public_key is not None or settings.signing_certificate_chain:
            return TrustRoots(settings.signing_public_key, settings.signing_certificate_chain)
        signing = source.manifest.signing
        return TrustRoots(
            source.directory / signing.public_key if signing.public_key else None,
            tuple(source.directory / c for c in signing.certificate_chain),
        )

    def read_artifact(self, source: ModelSource, version: int) -> bytes | None:
        """The decrypted bytes of ``version``'s artifact when it is encrypted, else None (the
        runtime then reads the file itself). Decryption happens in memory only.
        Raises DecryptionFailed or ConfigError naming the model and the file."""
        path = source.artifact(version)
        what = _what(source, version)
        try:
            if not is_encrypted(path):
                return None
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc
        started = time.perf_counter()
        settings = self.settings
        try:
            keys = KeyRing.gather(
                key_files=[settings.key_file] if settings.key_file else [],
                key_env=settings.key_env or None,
                key_dir=settings.key_dir,
            )
            plaintext = decrypt(data, keys, source.manifest.artifact, path)
        except ConfigError as exc:
            raise type(exc)(f"{what}: {exc}") from exc
        log.info(
            "%s: decrypted %s in memory with key %s (%.0f ms)",
            what,
            path.name,
            read_header(data, path).key_id,
            (time.perf_counter() - started) * 1000,
        )
        return plaintext


def _what(source: ModelSource, version: int) -> str:
    return f"model {source.name!r} version {version}"
