"""wss listeners against the ``openssl s_client`` binary: a TLS client that is not Python's ``ssl``.

Each probe spawns ``s_client`` from the reactor (the gateway runs in this process, so the reactor
must keep turning), writes a WebSocket upgrade request to its stdin and closes stdin once the
HTTP answer's header is in, or lets it end by itself when the TLS layer refuses.  Every run is
killed after ``TIMEOUT`` seconds, which fails the test instead of hanging trial.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from tests.integration.harness import KEY_PASSWORD, UPGRADE, WssTestCase

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
TIMEOUT = 20.0
VERSIONS = ("-tls1_2", "-tls1_3")


@dataclass
class Outcome:
    """What one ``s_client`` run printed and how it ended."""

    exit_code: int | None
    stdout: str
    stderr: str

    @property
    def status_code(self) -> int | None:
        """The status of the HTTP answer that came back over TLS, if any."""
        match = re.search(r"^HTTP/1\.1 (\d{3}) ", self.stdout, re.MULTILINE)
        return int(match.group(1)) if match else None

    @property
    def verified(self) -> bool:
        return "Verify return code: 0 (ok)" in self.stdout

    def protocol(self) -> str | None:
        """The negotiated protocol (``TLSv1.2``, ``TLSv1.3``), or None without a handshake."""
        match = re.search(r"^New, (TLSv1\.[0-3]), Cipher is ", self.stdout, re.MULTILINE)
        return match.group(1) if match else None

    def server_subject(self) -> str | None:
        match = re.search(r"^subject=(.*)$", self.stdout, re.MULTILINE)
        return match.group(1) if match else None

    def __str__(self) -> str:
        return f"exit {self.exit_code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


class SClientTimeout(Exception):
    """``openssl s_client`` did not end within ``TIMEOUT`` seconds (and was killed)."""


class _SClient(ProcessProtocol):
    """Writes ``request`` to stdin; closes stdin once the HTTP header is in (s_client then ends)."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.stdout = b""
        self.stderr = b""
        self.ended: Deferred[Outcome] = Deferred()
        self.timed_out = False
        self._stdin_open = True

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # s_client reads it once its handshake is done

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        answer = self.stdout.find(b"HTTP/1.1 ")
        if self._stdin_open and answer >= 0 and b"\r\n\r\n" in self.stdout[answer:]:
            self._stdin_open = False
            self.transport.closeStdin()

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        outcome = Outcome(
            reason.value.exitCode,
            self.stdout.decode("latin-1"),
            self.stderr.decode("latin-1"),
        )
        if self.timed_out:
            self.ended.errback(SClientTimeout(f"s_client killed after {TIMEOUT}s: {outcome}"))
        else:
            self.ended.callback(outcome)

    def kill(self) -> None:
        self.timed_out = True
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:  # it ended just now; processEnded is on its way
            pass


def s_client(port: int, *args: str, cid: str = "CP1") -> Deferred[Outcome]:
    """Run ``openssl s_client`` against ``127.0.0.1:port`` with ``args``, sending the upgrade for ``cid``."""
    protocol = _SClient(UPGRADE.format(cid=cid).encode())
    argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"]
    argv += ["-nocommands", *args]
    reactor.spawnProcess(protocol, OPENSSL, argv, env=dict(os.environ))
    killer = reactor.callLater(TIMEOUT, protocol.kill)

    def stop_timer(result: Any) -> Any:
        if killer.active():
            killer.cancel()
        return result

    return protocol.ended.addBoth(stop_timer)


class _OpenSslTestCase(WssTestCase):
    def setUp(self) -> Any:
        if not os.access(OPENSSL, os.X_OK):
            raise RuntimeError(f"no openssl binary at {OPENSSL}: scripts/test installs the openssl package")
        return super().setUp()

    def verifying(self, *args: str) -> tuple[str, ...]:
        """Options checking the server certificate against the dev CA, for the name localhost."""
        verify = ("-CAfile", str(self.pki.ca_cert), "-verify_return_error", "-verify_hostname", "localhost")
        return (*verify, *args)

    def with_certificate(self, cid: str, *args: str) -> tuple[str, ...]:
        """``verifying`` plus ``cid``'s client certificate (and the intermediate, if there is one)."""
        options = ["-cert", str(self.pki.client_certs[cid]), "-key", str(self.pki.client_keys[cid])]
        if self.pki.intermediate_cert is not None:
            options += ["-cert_chain", str(self.pki.intermediate_cert)]
        return self.verifying(*options, *args)

    def probe(self, *args: str, cid: str = "CP1") -> Deferred[Outcome]:
        return s_client(self.port, *args, cid=cid)

    @inlineCallbacks
    def assertSwitched(self, args: tuple[str, ...], cid: str, protocol: str) -> Any:
        """s_client verifies the dev server certificate over ``protocol`` and the upgrade gets 101."""
        outcome = yield self.probe(*args, cid=cid)
        self.assertEqual(outcome.exit_code, 0, outcome)
        self.assertTrue(outcome.verified, outcome)
        self.assertEqual(outcome.protocol(), protocol, outcome)
        subject = outcome.server_subject()
        self.assertIsNotNone(subject, outcome)
        self.assertRegex(subject, r"CN ?= ?localhost$")
        self.assertRegex(subject, r"O ?= ?ocppgw development")
        self.assertEqual(outcome.status_code, 101, outcome)
        self.assertIn("\r\nSec-WebSocket-Protocol: ocpp1.6\r\n", outcome.stdout)
        yield self.gone(cid)

    def assertRefused(self, outcome: Outcome, error: str) -> None:
        """s_client failed with ``error`` in its TLS error line, before any HTTP answer.

        (On a failed handshake s_client still prints "New, <version>, Cipher is ..." from the
        ServerHello; the exit status and the error line are what say it failed.)
        """
        self.assertNotEqual(outcome.exit_code, 0, outcome)
        self.assertIsNone(outcome.status_code, outcome)
        self.assertRegex(outcome.stderr, rf"error:.*SSL routines:.*{error}")


class DefaultListenerTests(_OpenSslTestCase):
    """The default wss listener: TLS 1.2 and 1.3, no client certificate asked for."""

    @inlineCallbacks
    def test_tls12_and_tls13_verified(self) -> Any:
        """-tls1_2 and -tls1_3 verify the dev server certificate against the dev CA and get 101."""
        yield self.assertSwitched(self.verifying("-tls1_2"), "P12", "TLSv1.2")
        yield self.assertSwitched(self.verifying("-tls1_3"), "P13", "TLSv1.3")

    @inlineCallbacks
    def test_other_ca_fails_verification(self) -> Any:
        """Against another CA the same server certificate does not verify: -verify_return_error aborts."""
        for version in VERSIONS:
            outcome = yield self.probe("-CAfile", str(self.rogue.ca_cert), "-verify_return_error", version)
            self.assertRefused(outcome, "certificate verify failed")


class OnlyTls13Tests(_OpenSslTestCase):
    wss_options = "versions = tlsv1.3\n"

    @inlineCallbacks
    def test_tls12_refused(self) -> Any:
        """versions = tlsv1.3: s_client -tls1_2 is refused in the handshake, -tls1_3 gets in."""
        outcome = yield self.probe(*self.verifying("-tls1_2"))
        self.assertRefused(outcome, "alert protocol version")
        yield self.assertSwitched(self.verifying("-tls1_3"), "P13", "TLSv1.3")


class RequiredClientCertificateTests(_OpenSslTestCase):
    """verify_peer with fail_if_no_peer_cert = true; client certificates signed by an intermediate."""

    wss_options = "verify = verify_peer\ncacertfile = {ca}\nfail_if_no_peer_cert = true\n"
    intermediate = True

    @inlineCallbacks
    def test_certificate_gets_in(self) -> Any:
        """With CP1's certificate and the intermediate, the upgrade gets 101 over TLS 1.2 and 1.3."""
        yield self.assertSwitched(self.with_certificate("CP1", "-tls1_2"), "CP1", "TLSv1.2")
        yield self.assertSwitched(self.with_certificate("CP1", "-tls1_3"), "CP1", "TLSv1.3")

    @inlineCallbacks
    def test_no_certificate_tls12(self) -> Any:
        """Without -cert under TLS 1.2 the server's alert ends the handshake itself."""
        outcome = yield self.probe(*self.verifying("-tls1_2"))
        self.assertRefused(outcome, "alert handshake failure")

    @inlineCallbacks
    def test_no_certificate_tls13(self) -> Any:
        """Without -cert under TLS 1.3 the client's side of the handshake ends, but the request gets
        no HTTP answer: the server's "certificate required" alert comes instead."""
        outcome = yield self.probe(*self.verifying("-tls1_3"))
        self.assertRefused(outcome, "alert certificate required")

    @inlineCallbacks
    def test_certificate_from_other_ca(self) -> Any:
        """A CP1 certificate from a CA the listener does not trust: "unknown ca", no HTTP answer."""
        for version in VERSIONS:
            rogue = ("-cert", str(self.rogue.client_certs["CP1"]), "-key", str(self.rogue.client_keys["CP1"]))
            outcome = yield self.probe(*self.verifying(*rogue, version))
            self.assertRefused(outcome, "alert unknown ca")


class CertificateIdentityTests(_OpenSslTestCase):
    """Security profile 3: client_cert_identity = cn binds the certificate's CN to the cid."""

    wss_options = (
        "verify = verify_peer\ncacertfile = {ca}\nfail_if_no_peer_cert = false\nclient_cert_identity = cn\n"
    )

    @inlineCallbacks
    def test_cn_not_the_cid(self) -> Any:
        """CP1's certificate on /ocpp/CP2 gets 403 after a verified handshake; on /ocpp/CP1, 101."""
        outcome = yield self.probe(*self.with_certificate("CP1", "-tls1_3"), cid="CP2")
        self.assertTrue(outcome.verified, outcome)
        self.assertEqual(outcome.protocol(), "TLSv1.3", outcome)
        self.assertEqual(outcome.status_code, 403, outcome)
        self.assertEqual(self.gw.messages("ocpp/cp/CP2/Presence"), [])
        yield self.assertSwitched(self.with_certificate("CP1", "-tls1_2"), "CP1", "TLSv1.2")


class EncryptedKeyTests(_OpenSslTestCase):
    """The server key encrypted, its password written in the listener section."""

    wss_options = f"keyfile = {{pki}}/server-encrypted.key\npassword = {KEY_PASSWORD}\n"

    @inlineCallbacks
    def test_encrypted_key(self) -> Any:
        """With the right password the listener serves the dev server certificate, verified."""
        yield self.assertSwitched(self.verifying("-tls1_3"), "CP1", "TLSv1.3")
