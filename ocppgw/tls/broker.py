"""TLS to the MQTT broker: an ``ssl.SSLContext`` from ``[mqtt]``, hostname checked by service-identity.

The files are read at start-up (``ocppgw.tap.Options`` calls ``check_mqtt_tls``), so an
unreadable file or a wrong key password stops twistd with one line naming the file; they are read
with the wss listeners' loaders (``ocppgw.tls.pem``), so a mistake reads the same on both sides.

OpenSSL's own hostname check is off (``check_hostname = False``, and paho's fallback
``match_hostname`` is off through ``tls_insecure_set(True)``); instead the socket class this
context makes checks the peer certificate with ``service_identity`` right after the TLS handshake,
before paho sends CONNECT (so the MQTT password never reaches a server that failed the check).
A refusal closes the socket and raises ``ssl.SSLCertVerificationError``, which paho treats as a
failed connection attempt and retries with its back-off.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from typing import Any

from cryptography import x509
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address

from ocppgw.config import ConfigError, GatewayConfig, MqttSection, problem_line
from ocppgw.tls.pem import TlsConfigError, load_certificates, load_key_pair

Refused = Callable[[str], None]


class _VerifyingSocket(ssl.SSLSocket):
    """Reports a failed handshake and checks the server's name once the handshake is done."""

    def do_handshake(self, block: bool = False) -> None:
        context = self.context
        assert isinstance(context, BrokerContext)
        try:
            super().do_handshake(block)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as e:
            context.report(f"TLS handshake failed: {e.reason or e}")
            raise
        problem = context.name_problem(self.getpeercert(binary_form=True))
        if problem is not None:
            context.report(problem)
            self.close()
            raise ssl.SSLCertVerificationError(problem)


class BrokerContext(ssl.SSLContext):
    """A client context for the broker connection; ``on_refused(reason)`` is called in paho's thread.

    paho is given this context once; ``reload`` builds a fresh one from the files, which every later
    connection then uses (paho offers no way to replace its context)."""

    sslsocket_class = _VerifyingSocket
    expected_name: str | None = None  # None: no hostname check
    server_name: str | None = None  # SNI override
    on_refused: Refused | None = None
    _current: BrokerContext | None = None  # set by reload

    def wrap_socket(self, sock: Any, *args: Any, server_hostname: Any = None, **kwargs: Any) -> Any:
        current = self._current
        if current is not None:
            return current.wrap_socket(sock, *args, server_hostname=server_hostname, **kwargs)
        if self.server_name is not None:
            server_hostname = self.server_name
        return super().wrap_socket(sock, *args, server_hostname=server_hostname, **kwargs)

    def reload(self, config: MqttSection) -> None:
        """Re-read ``config``'s files for the next connection; ``TlsConfigError`` keeps the current ones."""
        self._current = broker_context(config, self.on_refused)

    def report(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)

    def name_problem(self, der: bytes | None) -> str | None:
        """Why the certificate ``der`` does not belong to ``expected_name``, or None."""
        name = self.expected_name
        if name is None:
            return None
        if der is None:
            return "the broker sent no certificate"
        certificate = x509.load_der_x509_certificate(der)
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            address = None
        try:
            if address is not None:
                verify_certificate_ip_address(certificate, str(address))
            else:
                verify_certificate_hostname(certificate, name)
        except (VerificationError, CertificateError) as e:
            return f"the broker's certificate does not match {name}: {e}"
        return None


def broker_context(config: MqttSection, on_refused: Refused | None = None) -> BrokerContext | None:
    """The context for ``[mqtt] tls = true`` (None when off); ``TlsConfigError`` names the bad file."""
    if not config.tls:
        return None
    context = BrokerContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if config.cacertfile is not None:
        load_certificates(config.cacertfile, "cacertfile")
        try:
            context.load_verify_locations(cafile=str(config.cacertfile))
        except (ssl.SSLError, OSError) as e:
            raise TlsConfigError("cacertfile", f"cannot use {config.cacertfile}: {e}") from None
    else:
        context.load_default_certs()
    if config.certfile is not None and config.keyfile is not None:
        # Read and checked first for a reason that names the file; ssl's own errors say less.
        load_key_pair(config.certfile, config.keyfile, config.keyfile_password, "keyfile_password")
        try:
            context.load_cert_chain(str(config.certfile), str(config.keyfile), config.keyfile_password)
        except (ssl.SSLError, OSError) as e:
            raise TlsConfigError(
                "certfile", f"cannot use {config.certfile} with {config.keyfile}: {e}"
            ) from None
    if config.verify_hostname:
        context.expected_name = config.tls_server_name or config.host
    context.server_name = config.tls_server_name
    context.on_refused = on_refused
    return context


def check_mqtt_tls(config: GatewayConfig) -> None:
    """Read the ``[mqtt]`` TLS files now; ``ConfigError`` with one line ``<source>: [mqtt] <key>: ...``."""
    try:
        broker_context(config.mqtt)
    except TlsConfigError as e:
        raise ConfigError([problem_line(config.source, "mqtt", e.key, e.reason)]) from None
