"""What several authentication backends share: the reference's ``is_superuser`` rule, the HTTP
client (``treq`` on a bounded pool of its own, TLS from the ``ssl_*`` keys) and the error a backend
raises at construction when its settings cannot be used.
"""

from __future__ import annotations

import re
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

from cryptography.hazmat.primitives import serialization
from treq.client import HTTPClient
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ocppgw.config.sections import AuthenticationSection
from ocppgw.tls.pem import TlsConfigError, load_certificates, load_key_pair

_DECIMAL_INTEGER = re.compile(r"[+-]?[0-9]+")


class BackendConfigError(Exception):
    """A backend's settings cannot be used (a file unreadable, a secret not base64...): ``key`` is
    the ``[authentication]`` key, ``reason`` says why without any secret. Raised by ``make``."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def to_bool(value: Any) -> bool:
    """The reference's ``is_superuser`` coercion: true for ``true``, ``"true"``, an integer >= 1 and a
    decimal integer string >= 1; false for everything else (``null``, ``""``, ``"0"``, ``"TRUE"``,
    ``"yes"``, floats). Bytes count as the ASCII string they spell (database columns)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value >= 1
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return False
    if isinstance(value, str):
        if value == "true":
            return True
        return _DECIMAL_INTEGER.fullmatch(value) is not None and int(value) >= 1
    return False


@implementer(IPolicyForHTTPS)
class ClientTls:
    """TLS for an authentication server: the ``ssl_*`` keys of ``[authentication]``.

    ``ssl_verify = true`` (the default) checks the server's chain against ``ssl_cacertfile`` (the
    platform's trust store when unset) and its name against the URL's host; ``false`` checks nothing.
    ``ssl_certfile``/``ssl_keyfile`` present a client certificate."""

    def __init__(self, section: AuthenticationSection) -> None:
        self._verify = section.ssl_verify
        self._client: ssl.PrivateCertificate | None = None
        try:
            if section.ssl_certfile is not None or section.ssl_keyfile is not None:
                if section.ssl_certfile is None or section.ssl_keyfile is None:
                    raise TlsConfigError("certfile", "ssl_certfile and ssl_keyfile go together")
                pair = load_key_pair(section.ssl_certfile, section.ssl_keyfile, None)
                key_pem = pair.key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                cert_pem = pair.chain[0].public_bytes(serialization.Encoding.PEM)
                self._client = ssl.PrivateCertificate.loadPEM(cert_pem + key_pem)
            self._trust: Any = ssl.platformTrust()
            if section.ssl_cacertfile is not None:
                authorities = load_certificates(section.ssl_cacertfile, "cacertfile")
                self._trust = ssl.trustRootFromCertificates(
                    [ssl.Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in authorities]
                )
        except TlsConfigError as e:
            raise BackendConfigError(f"ssl_{e.key}", e.reason) from None

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        if not self._verify:
            options = self._client.options() if self._client is not None else ssl.CertificateOptions()
            return options  # a context factory: Twisted's TLS wraps it as a connection creator
        return ssl.optionsForClientTLS(
            hostname.decode("ascii"), trustRoot=self._trust, clientCertificate=self._client
        )


class WebClient:
    """``treq`` on an ``HTTPConnectionPool`` of its own: at most ``connections`` requests at a time
    (the others wait their turn inside their own timeout), keep-alive, no cookies, no redirects
    followed. Every call is bounded by ``timeout`` seconds of ``clock`` time, the body included."""

    def __init__(
        self, section: AuthenticationSection, reactor: Any, clock: Any = None, connections: int | None = None
    ) -> None:
        self._clock = clock if clock is not None else reactor
        self.timeout = section.request_timeout
        size = max(1, connections if connections is not None else section.pool_size)
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = size
        self._limit = DeferredSemaphore(size)
        agent = Agent(reactor, ClientTls(section), connectTimeout=section.request_timeout, pool=self._pool)
        self._client = HTTPClient(agent, cookiejar=CookieJar(DefaultCookiePolicy(allowed_domains=[])))

    def fetch(
        self, method: str, url: bytes, headers: dict[bytes, list[bytes]], body: bytes | None
    ) -> Deferred[tuple[int, str, bytes]]:
        """(status, content-type in lower case, body) of one exchange; fails with the reason there
        was no complete response (refused, TLS, timeout)."""

        def attempt() -> Deferred[tuple[int, str, bytes]]:
            d = self._client.request(
                method, url.decode("ascii"), headers=headers, data=body, allow_redirects=False
            )
            return d.addCallback(_read)

        def again(failure: Failure) -> Deferred[tuple[int, str, bytes]]:
            # A kept-alive connection the server closed as the request went out: Twisted retries
            # only bodiless idempotent requests by itself. Once, and still inside the timeout.
            failure.trap(RequestNotSent, RequestTransmissionFailed, ResponseNeverReceived)
            if any(reason.check(CancelledError) for reason in getattr(failure.value, "reasons", ())):
                return failure  # the timeout, not the connection
            return attempt()

        def exchange() -> Deferred[tuple[int, str, bytes]]:
            return attempt().addErrback(again)

        d = self._limit.run(exchange)
        d.addTimeout(self.timeout, self._clock)
        return d

    def close(self) -> Deferred[None]:
        """Close the kept-alive connections; a request in flight still ends within its timeout."""
        return self._pool.closeCachedConnections()


def _read(response: Any) -> Deferred[tuple[int, str, bytes]]:
    content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
    kind = content_type.decode("latin-1").strip().lower()
    return response.content().addCallback(lambda body: (response.code, kind, body))
