"""Keys and certificates made fresh for each test, with the same libraries an operator uses.

(Not a conftest.py: the suite imports the top-level conftest by name, which a second one would
shadow.)
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from infership.security.keys import new_key
from infership.security.signing import new_signing_key


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path


def write_signing_key(folder: Path, name: str) -> KeyPair:
    private_pem, public_pem = new_signing_key()
    (folder / f"{name}.pem").write_bytes(private_pem)
    (folder / f"{name}.pub").write_bytes(public_pem)
    return KeyPair(folder / f"{name}.pem", folder / f"{name}.pub")


def write_encryption_key(path: Path) -> Path:
    path.write_text(new_key() + "\n")
    return path


@dataclass(frozen=True)
class CertifiedKey:
    private: Path
    certificate: Path
    ca: Path


def make_certified_key(folder: Path, name: str) -> CertifiedKey:
    """A CA and a code-signing leaf certificate it issued, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} signer")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    private = folder / f"{name}-leaf.pem"
    private.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / f"{name}-leaf.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (folder / f"{name}-ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return CertifiedKey(private, folder / f"{name}-leaf.crt", folder / f"{name}-ca.crt")


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
