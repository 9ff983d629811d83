"""Signatures over model version folders, made and checked with OpenSSF ``model-signing``.

A version folder ``models/NAME/N/`` is signed as a whole: ``N/model.sig`` is a Sigstore bundle
whose payload lists the sha256 of every file in the folder, so a changed, removed or added file
breaks it. Signing uses an elliptic-curve private key (P-256/384/521), optionally with a signing
certificate; verification needs only the public key or the CA certificates, and works offline
(no transparency log). The layout is the one ``model_signing sign key|certificate`` writes, so
signatures made with the OpenSSF command verify here and the other way round.

``model-signing`` is the optional ``infership[signing]`` extra: it is imported only when a model
is signed or verified, and its absence is then a clear ConfigError.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from infership.errors import ConfigError, SignatureInvalid

SIGNATURE_NAME = "model.sig"
"""The signature file inside each version folder; the only file the signature leaves out."""

Policy = Literal["off", "warn", "require"]
POLICIES: tuple[Policy, ...] = ("off", "warn", "require")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrustRoots:
    """What a signature must chain to: one public key, or CA certificates (PEM files)."""

    public_key: Path | None = None
    certificate_chain: tuple[Path, ...] = ()

    def __bool__(self) -> bool:
        return self.public_key is not None or bool(self.certificate_chain)

    def describe(self) -> str:
        if self.public_key is not None:
            return f"public key {self.public_key}"
        return "certificates " + ", ".join(str(p) for p in self.certificate_chain)


def strictest(*policies: Policy) -> Policy:
    """The strictest of ``policies``: a model may tighten the server's policy, never relax it."""
    return max(policies, key=POLICIES.index)


def sign_folder(
    folder: Path,
    private_key: Path,
    *,
    certificate: Path | None = None,
    certificate_chain: Sequence[Path] = (),
    password: str | None = None,
) -> Path:
    """Sign every file of ``folder``; write and return ``folder/model.sig``.

    With ``certificate`` the bundle carries the signing certificate (and ``certificate_chain``,
    the intermediates) so verifiers need only their CA. Raises ValueError for unusable keys or
    folders.
    """
    ms = _model_signing()
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if certificate is not None and not certificate_chain:
        # model-signing embeds the chain in the bundle and cannot sign without one.
        raise ValueError(f"{certificate}: give the certificate chain (intermediates or the CA)")
    hashing = ms.hashing.Config().set_ignored_paths(paths=[SIGNATURE_NAME])
    config = ms.signing.Config().set_hashing_config(hashing)
    try:
        if certificate is None:
            config.use_elliptic_key_signer(private_key=private_key, password=password)
        else:
            config.use_certificate_signer(
                private_key=private_key,
                signing_certificate=certificate,
                certificate_chain=list(certificate_chain),
            )
    except (OSError, TypeError, ValueError) as exc:
        raise ValueError(f"{private_key}: cannot sign with this key: {_reason(exc)}") from exc
    signature = folder / SIGNATURE_NAME
    config.sign(folder, signature)
    return signature


def verify_folder(folder: Path, trust: TrustRoots, what: str) -> None:
    """Check ``folder`` against its ``model.sig``. ``what`` names the model in messages
    (``model 'x' version 2``). Raises SignatureInvalid naming the model and the file at fault,
    or ConfigError when no trust roots are given or ``model-signing`` is missing."""
    if not trust:
        raise ConfigError(
            f"{what}: verifying its signature needs a public key or CA certificates "
            "(model.yaml field 'signing.public_key' or 'signing.certificate_chain', or the "
            "server setting model_security.signing_public_key)"
        )
    signature = folder / SIGNATURE_NAME
    if not signature.is_file():
        raise SignatureInvalid(
            f"{what}: not signed: {signature} does not exist (sign the folder with "
            f"`infership sign {folder} --private-key KEY`)"
        )
    ms = _model_signing()
    config = ms.verifying.Config()
    try:
        if trust.public_key is not None:
            config.use_elliptic_key_verifier(public_key=trust.public_key)
        else:
            config.use_certificate_verifier(certificate_chain=list(trust.certificate_chain))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{what}: cannot use {trust.describe()}: {_reason(exc)}") from exc
    try:
        config.verify(folder, signature)
    except Exception as exc:  # model-signing, cryptography and OpenSSL raise untyped errors
        raise SignatureInvalid(f"{what}: {_failure(exc, folder, signature, trust)}") from exc


def check_folder(folder: Path, policy: Policy, trust: TrustRoots, what: str) -> str:
    """Apply ``policy`` to one version folder and say what happened (for logs and status).

    ``require``: raises what ``verify_folder`` raises. ``warn``: logs the problem and returns
    it. ``off``: checks nothing.
    """
    if policy == "off":
        return "signature not checked (policy off)"
    started = time.perf_counter()
    try:
        verify_folder(folder, trust, what)
    except ConfigError as exc:
        if policy == "require":
            raise
        log.warning("%s; serving it anyway (signing policy warn)", exc)
        return f"signature problem (policy warn): {exc}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.info("%s: signature verified with %s (%.0f ms)", what, trust.describe(), elapsed_ms)
    return f"signature verified with {trust.describe()}"


def _failure(exc: Exception, folder: Path, signature: Path, trust: TrustRoots) -> str:
    message = _reason(exc)
    if message.startswith("Signature mismatch: "):
        # model-signing lists the files that differ: "Hash mismatch for 'model.onnx'", ...
        detail = message.removeprefix("Signature mismatch: ").strip("[]").replace('"', "")
        return f"files in {folder} differ from what {signature} signed: {detail}"
    if message.startswith("Key mismatch") or type(exc).__name__ == "InvalidSignature":
        return f"{signature} was not signed by the trusted {trust.describe()}"
    return f"{signature} does not verify with {trust.describe()}: {message}"


def _reason(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def _model_signing() -> Any:
    try:
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError as exc:
        raise ConfigError(
            f"model signatures need the 'signing' extra (missing module {exc.name}): "
            "pip install 'infership[signing]'"
        ) from exc
    return model_signing


def new_signing_key() -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key pair as PEM: (private key, unencrypted PKCS#8; public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def version_folders(path: Path) -> list[Path]:
    """``path`` itself for a version folder; each numbered sub-folder for a model folder (one
    holding ``model.yaml``)."""
    if (path / "model.yaml").is_file():
        return sorted(
            (p for p in path.iterdir() if p.is_dir() and p.name.isdigit()),
            key=lambda p: int(p.name),
        )
    return [path]
