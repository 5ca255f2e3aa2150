"""PEM files for both TLS sides: certificates, a private key and the check that they belong together.

The wss listeners and the broker connection read the same kinds of files and must say the same
thing about the same mistake, so both read them here.  Every problem is a ``TlsConfigError``
naming the config key it belongs to; the caller turns it into its ``gw.ini: [section] key: reason``
line.  A key password never appears in a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


class TlsConfigError(Exception):
    """A TLS file or setting cannot be used; ``key`` is the config key it belongs to."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


def read_file(path: Path, key: str) -> bytes:
    """The bytes of ``path``; ``TlsConfigError(key)`` saying why it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise TlsConfigError(key, f"cannot read {path}: {e.strerror or e}") from None


def load_certificates(path: Path, key: str) -> list[x509.Certificate]:
    """Every PEM certificate in ``path``, in file order; at least one, or ``TlsConfigError(key)``."""
    data = read_file(path, key)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TlsConfigError(key, f"no PEM certificate in {path}")
    return certificates


def load_private_key(path: Path, password: str | None, password_key: str = "password") -> PrivateKeyTypes:
    """The PEM private key in ``path`` (config key ``keyfile``), decrypted with ``password``.

    ``password_key`` is the name the password has in this section, for the advice to set or remove it.
    """
    data = read_file(path, "keyfile")
    secret = password.encode("utf-8") if password else None
    try:
        return serialization.load_pem_private_key(data, password=secret)
    except TypeError:  # encrypted without a password, or a password for a plain key
        if secret is None:
            raise TlsConfigError("keyfile", f"{path} is encrypted: set {password_key}") from None
        raise TlsConfigError("keyfile", f"{path} is not encrypted: remove {password_key}") from None
    except ValueError:
        if secret is not None and b"ENCRYPTED" in data:
            raise TlsConfigError("keyfile", f"cannot decrypt {path}: wrong password") from None
        raise TlsConfigError("keyfile", f"no usable PEM private key in {path}") from None
    except Exception as e:  # an unsupported key type, for example
        raise TlsConfigError(
            "keyfile", f"cannot load the private key in {path}: {type(e).__name__}"
        ) from None


def public_key_der(public_key: Any) -> bytes:
    """The DER SubjectPublicKeyInfo of a cryptography public key: equal bytes, same key."""
    der = serialization.Encoding.DER
    return public_key.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class KeyPair:
    """A private key and the certificate chain it belongs to (``chain[0]`` is its certificate)."""

    key: PrivateKeyTypes
    chain: list[x509.Certificate]


def load_key_pair(
    certfile: Path, keyfile: Path, password: str | None, password_key: str = "password"
) -> KeyPair:
    """The chain in ``certfile`` and the key in ``keyfile``, once the key is known to match ``chain[0]``."""
    chain = load_certificates(certfile, "certfile")
    key = load_private_key(keyfile, password, password_key)
    if public_key_der(key.public_key()) != public_key_der(chain[0].public_key()):
        raise TlsConfigError("keyfile", f"the key in {keyfile} does not match the certificate in {certfile}")
    return KeyPair(key, chain)
