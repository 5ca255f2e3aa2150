"""wss listeners end to end: real TLS clients (the `ocpp` ChargePoint, Python ``ssl``) against the gateway."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from websockets.exceptions import InvalidStatus
from zope.interface import implementer

from ocppgw.core.ports import Credentials, Decision, IAuthenticator
from tests.devpki import client_context
from tests.integration.harness import UPGRADE, WssTestCase


def probe(port: int, context: ssl.SSLContext, cid: str = "CP1") -> str:
    """Open TLS to ``port``, send a WebSocket upgrade and say what came back (blocking: run in a thread).

    ``refused: ...`` when the TLS handshake or the first read failed or the server closed without a
    byte; otherwise the HTTP status line.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(UPGRADE.format(cid=cid).encode())
                data = b""
                while b"\r\n" not in data:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        except (ssl.SSLError, OSError) as e:
            return f"refused: {e}"
    if not data:
        return "refused: closed without a byte"
    return data.split(b"\r\n", 1)[0].decode("latin-1")


@implementer(IAuthenticator)
class RecordingAuthenticator:
    """Remembers each Credentials; allows unless the password is wrong."""

    def __init__(self, password: bytes | None = None) -> None:
        self.password = password
        self.seen: list[Credentials] = []

    def authenticate(self, credentials: Credentials) -> Any:
        self.seen.append(credentials)
        if self.password is not None and credentials.password != self.password:
            return succeed(Decision.deny("bad_username_or_password"))
        return succeed(Decision.allow())


class _WssTestCase(WssTestCase):
    def context(self, cid: str | None = None, version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
        """A client context trusting the dev CA, presenting ``cid``'s certificate when given."""
        if cid is None:
            return client_context(self.pki.ca_cert, version=version)
        chain = self.pki.client_chains.get(cid, self.pki.client_certs[cid])
        return client_context(self.pki.ca_cert, chain, self.pki.client_keys[cid], version=version)

    def rogue_context(self) -> ssl.SSLContext:
        """A client presenting a CP1 certificate from a CA the gateway does not trust."""
        return client_context(self.pki.ca_cert, self.rogue.client_certs["CP1"], self.rogue.client_keys["CP1"])

    def probe(self, context: ssl.SSLContext, cid: str = "CP1") -> Any:
        return deferToThread(probe, self.port, context, cid)

    @inlineCallbacks
    def assertAccepted(self, context: ssl.SSLContext, cid: str) -> Any:
        """The probe gets 101; returns once the gateway has seen it go (so no close timer is left)."""
        outcome = yield self.probe(context, cid)
        self.assertIn(" 101 ", outcome)
        yield self.gone(cid)

    @inlineCallbacks
    def booted(self, cid: str, context: ssl.SSLContext, **kwargs: Any) -> Any:
        """A ChargePoint over wss sends BootNotification; the reply comes from MQTT."""
        client = yield self.gw.connect(cid, url=self.url(cid), ssl=context, **kwargs)
        result = yield self.gw.boot(client, cid)
        self.assertEqual(result.status, "Accepted")
        return client

    def assertRefused(self, outcome: str) -> None:
        self.assertTrue(
            outcome.startswith("refused: "), f"not refused before any WebSocket byte: {outcome!r}"
        )


class NoClientCertificateTests(_WssTestCase):
    """Security profile 2's transport: verify_none, the default."""

    @inlineCallbacks
    def test_charge_point_over_wss(self) -> Any:
        """The `ocpp` ChargePoint boots over wss without a client certificate."""
        yield self.booted("CP1", self.context())
        (presence,) = self.gw.messages("ocpp/cp/CP1/Presence")[:1]
        self.assertEqual(presence["status"], "connected")

    @inlineCallbacks
    def test_client_certificate_ignored(self) -> Any:
        """With verify_none a client certificate is not asked for, and the CP still gets in."""
        yield self.booted("CP2", self.context("CP2"))

    @inlineCallbacks
    def test_tls12_and_tls13(self) -> Any:
        """Clients pinned to TLS 1.2 and to TLS 1.3 both get the 101 answer."""
        yield self.assertAccepted(self.context(version=ssl.TLSVersion.TLSv1_2), "P12")
        yield self.assertAccepted(self.context(version=ssl.TLSVersion.TLSv1_3), "P13")

    @inlineCallbacks
    def test_tls11_refused(self) -> Any:
        """TLS 1.1 is not in the default versions: refused during the TLS handshake."""
        outcome = yield self.probe(self.context(version=ssl.TLSVersion.TLSv1_1))
        self.assertRefused(outcome)

    @inlineCallbacks
    def test_ws_listener_still_plain(self) -> Any:
        """The plain ws listener next to the wss one keeps working."""
        client = yield self.gw.connect("CP9", ocpp_client=False)
        self.assertEqual(client.websocket.subprotocol, "ocpp1.6")


def silent_client(port: int) -> tuple[bytes, float]:
    """Connect over TCP, send nothing, and return what arrived before the close and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            data = raw.recv(4096)
        except ConnectionResetError:  # the gateway aborts the connection
            data = b""
    return data, time.monotonic() - started


class HandshakeTimeoutTests(_WssTestCase):
    wss_options = "handshake_timeout = 200ms\n"

    @inlineCallbacks
    def test_silent_client_closed(self) -> Any:
        """A client that never starts its TLS handshake is closed after handshake_timeout."""
        data, seconds = yield deferToThread(silent_client, self.port)
        self.assertEqual(data, b"")
        self.assertLess(seconds, 5)
        self.assertGreaterEqual(seconds, 0.15)


class OnlyTls13Tests(_WssTestCase):
    wss_options = "versions = tlsv1.3\n"

    @inlineCallbacks
    def test_tls12_refused(self) -> Any:
        """A version not listed is refused: a TLS 1.2 client against versions = tlsv1.3."""
        refused = yield self.probe(self.context(version=ssl.TLSVersion.TLSv1_2))
        self.assertRefused(refused)
        yield self.assertAccepted(self.context(version=ssl.TLSVersion.TLSv1_3), "P13")


class LegacyVersionTests(_WssTestCase):
    wss_options = "versions = tlsv1.2,tlsv1.1\n"

    @inlineCallbacks
    def test_tls11_listed(self) -> Any:
        """Listing tlsv1.1 lets a TLS 1.1 client in; TLS 1.3, not listed, is refused."""
        yield self.assertAccepted(self.context(version=ssl.TLSVersion.TLSv1_1), "P11")
        refused = yield self.probe(self.context(version=ssl.TLSVersion.TLSv1_3))
        self.assertRefused(refused)


class RequiredClientCertificateTests(_WssTestCase):
    """verify_peer with fail_if_no_peer_cert = true (security profile 3's transport)."""

    wss_options = "verify = verify_peer\ncacertfile = {ca}\nfail_if_no_peer_cert = true\n"
    intermediate = True

    @inlineCallbacks
    def test_charge_point_with_certificate(self) -> Any:
        """A ChargePoint presenting a certificate (chain through the intermediate) boots."""
        yield self.booted("CP1", self.context("CP1"))

    @inlineCallbacks
    def test_refusals_before_any_websocket_byte(self) -> Any:
        """No certificate, a certificate from another CA: the TLS layer refuses, no HTTP answer comes."""
        for context in (self.context(), self.rogue_context()):
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                context.minimum_version = context.maximum_version = version
                outcome = yield self.probe(context)
                self.assertRefused(outcome)

    @inlineCallbacks
    def test_charge_point_without_certificate(self) -> Any:
        """The `ocpp` ChargePoint without a certificate cannot open its WebSocket."""
        with self.assertRaises(Exception) as caught:
            yield self.gw.connect("CP1", url=self.url("CP1"), ssl=self.context())
        self.assertNotIsInstance(caught.exception, InvalidStatus)


class DepthTests(_WssTestCase):
    wss_options = "verify = verify_peer\ncacertfile = {ca}\nfail_if_no_peer_cert = true\ndepth = 0\n"
    intermediate = True

    @inlineCallbacks
    def test_chain_past_depth_refused(self) -> Any:
        """depth = 0 allows no intermediate: a client certificate signed by one is refused."""
        outcome = yield self.probe(self.context("CP1"))
        self.assertRefused(outcome)


class DepthOneTests(_WssTestCase):
    wss_options = "verify = verify_peer\ncacertfile = {ca}\nfail_if_no_peer_cert = true\ndepth = 1\n"
    intermediate = True

    @inlineCallbacks
    def test_chain_within_depth(self) -> Any:
        """depth = 1 allows the one intermediate."""
        yield self.assertAccepted(self.context("CP1"), "CP1")


class OptionalClientCertificateTests(_WssTestCase):
    wss_options = "verify = verify_peer\ncacertfile = {ca}\nfail_if_no_peer_cert = false\n"

    def setUp(self) -> Any:
        self.authenticator = RecordingAuthenticator()
        return super().setUp()

    @inlineCallbacks
    def test_no_certificate_gets_in(self) -> Any:
        """Without a certificate a charge point gets in; the authenticator sees no CN."""
        yield self.booted("CP1", self.context())
        self.assertEqual(self.authenticator.seen[-1].certificate_cn, None)

    @inlineCallbacks
    def test_bad_certificate_refused(self) -> Any:
        """A certificate the CA did not sign is still refused, before any WebSocket byte."""
        outcome = yield self.probe(self.rogue_context())
        self.assertRefused(outcome)

    @inlineCallbacks
    def test_certificate_named_in_the_connect_line(self) -> Any:
        """The one connect line of a charge point with a certificate names its CN and DN."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield self.booted("CP2", self.context("CP2"))
        connected = "charge point {cid} connected"
        (line,) = [formatEvent(e) for e in events if e.get("log_format", "").startswith(connected)]
        self.assertIn("CP2 connected from 127.0.0.1:", line)
        self.assertIn("with certificate CN='CP2' DN='CN=CP2,O=ocppgw development'", line)

    @inlineCallbacks
    def test_certificate_seen_by_authenticator(self) -> Any:
        """A good certificate's CN and DN reach the authenticator."""
        yield self.booted("CP2", self.context("CP2"))
        seen = self.authenticator.seen[-1]
        self.assertEqual(seen.certificate_cn, "CP2")
        self.assertEqual(seen.certificate_dn, "CN=CP2,O=ocppgw development")
        self.assertEqual(seen.listener, "wss.tls")


class CertificateIdentityTests(_WssTestCase):
    """Security profile 3: client_cert_identity = cn binds the certificate's CN to the cid."""

    wss_options = (
        "verify = verify_peer\ncacertfile = {ca}\nfail_if_no_peer_cert = false\nclient_cert_identity = cn\n"
    )

    @inlineCallbacks
    def test_right_cn(self) -> Any:
        """CP1's certificate on /ocpp/CP1 connects."""
        yield self.booted("CP1", self.context("CP1"))

    @inlineCallbacks
    def test_wrong_cn(self) -> Any:
        """CP1's certificate on /ocpp/CP2 is answered 403; nothing is published for CP2."""
        with self.assertRaises(InvalidStatus) as caught:
            yield self.gw.connect("CP2", url=self.url("CP2"), ssl=self.context("CP1"))
        self.assertEqual(caught.exception.response.status_code, 403)
        self.assertEqual(self.gw.messages("ocpp/cp/CP2/Presence"), [])

    @inlineCallbacks
    def test_no_certificate(self) -> Any:
        """Without a certificate (allowed by fail_if_no_peer_cert = false) the cid is not proven: 403."""
        outcome = yield self.probe(self.context(), cid="CP1")
        self.assertIn(" 403 ", outcome)


class BasicAuthOverTlsTests(_WssTestCase):
    """Security profile 2: Basic auth over wss through the authenticator."""

    def setUp(self) -> Any:
        self.authenticator = RecordingAuthenticator(password=b"secret-CP1")
        return super().setUp()

    @inlineCallbacks
    def test_right_password(self) -> Any:
        """The right password over wss: the charge point boots; the authenticator saw the credentials."""
        yield self.booted(
            "CP1", self.context(), additional_headers={"Authorization": _basic("CP1", "secret-CP1")}
        )
        seen = self.authenticator.seen[-1]
        self.assertEqual((seen.cid, seen.username, seen.password), ("CP1", "CP1", b"secret-CP1"))
        self.assertEqual(seen.listener, "wss.tls")

    @inlineCallbacks
    def test_wrong_password(self) -> Any:
        """A wrong password over wss is answered 401."""
        with self.assertRaises(InvalidStatus) as caught:
            yield self.gw.connect(
                "CP1",
                url=self.url("CP1"),
                ssl=self.context(),
                additional_headers={"Authorization": _basic("CP1", "nope")},
            )
        self.assertEqual(caught.exception.response.status_code, 401)


class EncryptedKeyTests(_WssTestCase):
    """The server key encrypted with a password given in the config (here from the environment)."""

    wss_options = "keyfile = {pki}/server-encrypted.key\npassword = ${{OCPPGW_TEST_KEY_PASSWORD}}\n"

    def setUp(self) -> Any:
        self.patch(os, "environ", {**os.environ, "OCPPGW_TEST_KEY_PASSWORD": "k3y pass"})
        return super().setUp()

    @inlineCallbacks
    def test_encrypted_key(self) -> Any:
        """With the right password the listener serves wss."""
        yield self.booted("CP1", self.context())


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
