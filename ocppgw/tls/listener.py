"""TLS for wss listeners: ``CertificateOptions`` from a ``TlsSection``, and the peer's identity.

Files are read at start-up (``ocppgw.tap.Options`` calls ``listener_options``), so a wrong key
password, an unreadable file or a key that does not match its certificate stops twistd with one
line naming the file; the key password never appears in it.  On SIGHUP they are read again
(``reload_listener_options``) and swapped in the listener's ``ReloadableContextFactory`` for new
connections.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import (
    AcceptableCiphers,
    Certificate,
    CertificateOptions,
    TLSVersion,
    trustRootFromCertificates,
)
from zope.interface import implementer

from ocppgw.config import ConfigError, GatewayConfig, ListenerSection, TlsSection, problem_line
from ocppgw.core.ports import PeerIdentity
from ocppgw.tls.pem import TlsConfigError, load_certificates, load_key_pair

_TWISTED_VERSIONS = {
    "tlsv1": TLSVersion.TLSv1_0,
    "tlsv1.1": TLSVersion.TLSv1_1,
    "tlsv1.2": TLSVersion.TLSv1_2,
    "tlsv1.3": TLSVersion.TLSv1_3,
}
_LEGACY_VERSIONS = frozenset({"tlsv1", "tlsv1.1"})


class ListenerCertificateOptions(CertificateOptions):
    """``CertificateOptions`` plus two settings Twisted's arguments cannot express.

    ``fail_if_no_peer_cert = false``: Twisted's ``trustRoot`` always asks OpenSSL to refuse a client
    without a certificate; such a client is to be let in (and still verified when it sends one).
    TLS 1.1 or 1.0 listed: OpenSSL 3 negotiates them only at security level 0, which it takes in the
    cipher list (``@SECLEVEL=0``).  Both are applied to the context Twisted builds, through
    pyOpenSSL's public ``Context`` API, before any connection uses it (pyOpenSSL refuses changes
    after that).
    """

    def __init__(self, *, require_certificate: bool, cipher_list: bytes | None, **kwargs: Any) -> None:
        """``cipher_list``: the list to set instead of Twisted's, or None to keep Twisted's."""
        super().__init__(**kwargs)
        self.require_certificate = require_certificate
        self.cipher_list = cipher_list
        self._adjusted: SSL.Context | None = None

    def getContext(self) -> SSL.Context:
        """Twisted's context (built once and cached by Twisted), adjusted the first time it is seen."""
        context = super().getContext()
        if context is not self._adjusted:
            if not self.require_certificate:
                context.set_verify(context.get_verify_mode() & ~SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
            if self.cipher_list is not None:
                context.set_cipher_list(self.cipher_list)
            self._adjusted = context
        return context


def _cipher_list_at_level_zero(**kwargs: Any) -> bytes:
    """The cipher list Twisted sets for these cipher and version arguments, with ``@SECLEVEL=0`` added.

    Read back from a context Twisted builds for them (on a throwaway connection, which freezes it).
    """
    probe = SSL.Connection(CertificateOptions(**kwargs).getContext(), None)
    return ":".join([*probe.get_cipher_list(), "@SECLEVEL=0"]).encode("ascii")


def certificate_options(tls: TlsSection) -> ListenerCertificateOptions:
    """The server ``CertificateOptions`` for one wss listener; ``TlsConfigError`` names what is wrong."""
    pair = load_key_pair(tls.certfile, tls.keyfile, tls.password)
    negotiation: dict[str, Any] = {  # what decides the cipher list
        "insecurelyLowerMinimumTo": _TWISTED_VERSIONS[tls.versions[-1]],
        "lowerMaximumSecurityTo": _TWISTED_VERSIONS[tls.versions[0]],
    }
    if tls.ciphers is not None:
        negotiation["acceptableCiphers"] = AcceptableCiphers.fromOpenSSLCipherString(tls.ciphers)
    kwargs: dict[str, Any] = {
        "privateKey": pair.key,
        "certificate": pair.chain[0],
        "extraCertChain": pair.chain[1:],
        "verifyDepth": tls.depth,
        **negotiation,
    }
    if tls.verify == "verify_peer":
        assert tls.cacertfile is not None  # checked by the config reader
        authorities = load_certificates(tls.cacertfile, "cacertfile")
        kwargs["trustRoot"] = trustRootFromCertificates(
            [Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in authorities]
        )
    legacy = bool(_LEGACY_VERSIONS.intersection(tls.versions))
    try:
        options = ListenerCertificateOptions(
            require_certificate=tls.fail_if_no_peer_cert,
            cipher_list=_cipher_list_at_level_zero(**negotiation) if legacy else None,
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


def _problem(config: GatewayConfig, listener: ListenerSection, key: str, reason: str) -> str:
    return problem_line(config.source, listener.section, key, reason)


def listener_options(config: GatewayConfig) -> dict[str, ListenerCertificateOptions]:
    """``CertificateOptions`` per wss listener, keyed ``wss.<name>``.

    Raises ``ConfigError`` with one line per listener, ``<source>: [listeners.wss.<name>] <key>: <reason>``.
    """
    built: dict[str, ListenerCertificateOptions] = {}
    problems: list[str] = []
    for listener in config.listeners:
        if listener.tls is None:
            continue
        try:
            built[listener.label] = certificate_options(listener.tls)
        except TlsConfigError as e:
            problems.append(_problem(config, listener, e.key, e.reason))
    if problems:
        raise ConfigError(problems)
    return built


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

    def getContext(self) -> SSL.Context:
        return self.options.getContext()


def reload_listener_options(
    config: GatewayConfig, factories: dict[str, ReloadableContextFactory]
) -> list[str]:
    """Read every wss listener's files again and swap those that load; one line per listener that did not.

    A listener whose files fail keeps its current options.
    """
    problems: list[str] = []
    for listener in config.listeners:
        name = listener.label
        if listener.tls is None or name not in factories:
            continue
        try:
            options = certificate_options(listener.tls)
        except TlsConfigError as e:
            problems.append(_problem(config, listener, e.key, f"{e.reason}; kept the previous certificate"))
            continue
        factories[name].options = options
    return problems
