"""TLS for wss listeners: ``CertificateOptions`` from a ``TlsSection``, and the peer's identity.

Files are read once, at start-up (``Options.postOptions`` calls ``check_listeners``), so a
wrong key password, an unreadable file or a key that does not match its certificate stops
twistd with one line naming the file.  The key password never appears in a message.
On SIGHUP they are read again (``reload_listener_options``) and swapped in the listener's
``ReloadableContextFactory`` for new connections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    TLSVersion,
    trustRootFromCertificates,
)
from zope.interface import implementer

from ocppgw.config import ConfigError, GatewayConfig, ListenerSection, TlsSection
from ocppgw.core.ports import PeerIdentity

_TWISTED_VERSIONS = {
    "tlsv1": TLSVersion.TLSv1_0,
    "tlsv1.1": TLSVersion.TLSv1_1,
    "tlsv1.2": TLSVersion.TLSv1_2,
    "tlsv1.3": TLSVersion.TLSv1_3,
}
_LEGACY_VERSIONS = frozenset({"tlsv1", "tlsv1.1"})


class TlsConfigError(Exception):
    """A TLS file or setting cannot be used; ``key`` is the config key it belongs to."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


class _ListenerCertificateOptions(CertificateOptions):
    """``CertificateOptions`` that may accept a client without a certificate while still verifying one.

    Twisted's ``trustRoot`` always sets ``requireCertificate``; ``fail_if_no_peer_cert = false``
    needs VERIFY_PEER without VERIFY_FAIL_IF_NO_PEER_CERT, so the flag is set back afterwards
    (``_makeContext`` reads it when the context is built).  With TLS 1.1 or 1.0 listed, OpenSSL 3
    needs security level 0 to negotiate them at all.
    """

    def __init__(self, *, require_certificate: bool, legacy_versions: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.trustRoot is not None:
            self.requireCertificate = require_certificate
        if legacy_versions:
            self._cipherString += ":@SECLEVEL=0"


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TlsConfigError(key, f"cannot read {path}: {e.strerror or e}") from None


def _load_certificates(path: Path, key: str) -> list[x509.Certificate]:
    data = _read(path, key)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        raise TlsConfigError(key, f"no PEM certificate in {path}")
    return certificates


def _load_key(path: Path, password: str | None) -> PrivateKeyTypes:
    data = _read(path, "keyfile")
    secret = password.encode("utf-8") if password else None
    try:
        return serialization.load_pem_private_key(data, password=secret)
    except TypeError:  # encrypted without a password, or a password for a plain key
        if secret is None:
            raise TlsConfigError("keyfile", f"{path} is encrypted: set password") from None
        raise TlsConfigError("keyfile", f"{path} is not encrypted: remove password") from None
    except ValueError:
        if secret is not None and b"ENCRYPTED" in data:
            raise TlsConfigError("keyfile", f"cannot decrypt {path}: wrong password") from None
        raise TlsConfigError("keyfile", f"no usable PEM private key in {path}") from None
    except Exception as e:  # an unsupported key type, for example
        raise TlsConfigError(
            "keyfile", f"cannot load the private key in {path}: {type(e).__name__}"
        ) from None


def _public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_options(tls: TlsSection) -> CertificateOptions:
    """The server ``CertificateOptions`` for one wss listener; ``TlsConfigError`` names what is wrong."""
    chain = _load_certificates(tls.certfile, "certfile")
    key = _load_key(tls.keyfile, tls.password)
    if _public_der(key.public_key()) != _public_der(chain[0].public_key()):
        raise TlsConfigError(
            "keyfile", f"the key in {tls.keyfile} does not match the certificate in {tls.certfile}"
        )
    kwargs: dict[str, Any] = {
        "privateKey": key,
        "certificate": chain[0],
        "extraCertChain": chain[1:],
        "verifyDepth": tls.depth,
        "insecurelyLowerMinimumTo": _TWISTED_VERSIONS[tls.versions[-1]],
        "lowerMaximumSecurityTo": _TWISTED_VERSIONS[tls.versions[0]],
    }
    if tls.ciphers is not None:
        kwargs["acceptableCiphers"] = AcceptableCiphers.fromOpenSSLCipherString(tls.ciphers)
    if tls.verify == "verify_peer":
        assert tls.cacertfile is not None  # checked by the config reader
        authorities = _load_certificates(tls.cacertfile, "cacertfile")
        kwargs["trustRoot"] = trustRootFromCertificates(
            [Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in authorities]
        )
    try:
        options = _ListenerCertificateOptions(
            require_certificate=tls.fail_if_no_peer_cert,
            legacy_versions=bool(_LEGACY_VERSIONS.intersection(tls.versions)),
            **kwargs,
        )
    except ValueError as e:
        if tls.ciphers is not None and "cipher" in str(e).lower():
            raise TlsConfigError("ciphers", f"no usable cipher in {tls.ciphers!r}") from None
        raise TlsConfigError("certfile", f"cannot use {tls.certfile}: {e}") from None
    try:
        options.getContext()  # build it now: OpenSSL's own objections surface at start-up
    except Exception as e:
        raise TlsConfigError("certfile", f"cannot use {tls.certfile} with {tls.keyfile}: {e}") from None
    return options


def listener_options(config: GatewayConfig) -> dict[str, CertificateOptions]:
    """``CertificateOptions`` per wss listener, keyed ``wss.<name>``.

    Raises ``ConfigError`` with one line per listener, ``<source>: [listeners.wss.<name>] <key>: <reason>``.
    """
    built: dict[str, CertificateOptions] = {}
    problems: list[str] = []
    for listener in config.listeners:
        if listener.tls is None:
            continue
        try:
            built[f"{listener.kind}.{listener.name}"] = certificate_options(listener.tls)
        except TlsConfigError as e:
            problems.append(f"{config.source}: [{_section(listener)}] {e.key}: {e.reason}")
    if problems:
        raise ConfigError(problems)
    return built


def _section(listener: ListenerSection) -> str:
    return f"listeners.{listener.kind}.{listener.name}"


def peer_identity(transport: Any) -> PeerIdentity | None:
    """The CN and DN of the client certificate on ``transport``; None without TLS or without a certificate."""
    get = getattr(transport, "getPeerCertificate", None)
    if get is None:
        return None
    try:
        certificate = get()
    except Exception:
        return None
    if certificate is None:
        return None
    subject = certificate.to_cryptography().subject
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = names[0].value if names else None
    return PeerIdentity(cn=cn if isinstance(cn, str) else None, dn=subject.rfc4514_string())


def identity_refusal(tls: TlsSection | None, cid: str, identity: PeerIdentity | None) -> str | None:
    """Why this cid may not connect with this certificate (client_cert_identity = cn), else None."""
    if tls is None or tls.client_cert_identity != "cn":
        return None
    if identity is None:
        return "no client certificate"
    if identity.cn != cid:
        return f"certificate CN {identity.cn!r} is not the charge point id"
    return None


@implementer(IOpenSSLContextFactory)
class ReloadableContextFactory:
    """What a wss port is given instead of its ``CertificateOptions``: a holder that can be swapped.

    ``TLSMemoryBIOFactory`` asks for a context per new connection (``getContext``), so replacing
    ``options`` changes what new connections get; established ones keep the ``SSL.Connection``
    they were made with.
    """

    def __init__(self, options: CertificateOptions) -> None:
        self.options = options

    def getContext(self) -> Any:
        return self.options.getContext()


def reload_listener_options(
    config: GatewayConfig, factories: dict[str, ReloadableContextFactory]
) -> list[str]:
    """Read every wss listener's files again and swap those that load; one line per listener that did not.

    A listener whose files fail keeps its current options.
    """
    problems: list[str] = []
    for listener in config.listeners:
        name = f"{listener.kind}.{listener.name}"
        if listener.tls is None or name not in factories:
            continue
        try:
            options = certificate_options(listener.tls)
        except TlsConfigError as e:
            problems.append(
                f"{config.source}: [{_section(listener)}] {e.key}: {e.reason}; kept the previous certificate"
            )
            continue
        factories[name].options = options
    return problems
