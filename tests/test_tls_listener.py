"""Tests for ocppgw.tls and [listeners.wss.<name>]: config into CertificateOptions, one-line errors."""

from __future__ import annotations

import dataclasses
import io
import re
import ssl
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.config import ConfigError, ListenerSection, TlsSection, config_from_string
from ocppgw.core.ports import PeerIdentity
from ocppgw.service import GatewayService, StartupError
from ocppgw.tap import Options
from ocppgw.tls.listener import ListenerCertificateOptions, identity_refusal, listener_options, peer_identity
from ocppgw.ws.server import OcppTlsServerProtocol
from tests.devpki import client_context, make_dev_certs
from tests.test_service import FakeLink

PASSWORD = "correct horse"


def wss(**keys: str) -> str:
    """A config text with one wss listener named x holding ``keys``."""
    keys = {"bind": "0", "certfile": "server.pem", "keyfile": "server.key", **keys}
    return "[listeners.wss.x]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items())


class _PkiTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = make_dev_certs(self.mktemp(), ["CP1"], key_password=PASSWORD)
        self.base = self.pki.directory

    def load(self, **keys: str) -> Any:
        return config_from_string(wss(**keys), base_dir=self.base, environ={"KEY_PASSWORD": PASSWORD})

    def problems(self, **keys: str) -> list[str]:
        error = self.assertRaises(ConfigError, self.load, **keys)
        return error.problems

    def tls_problems(self, **keys: str) -> list[str]:
        """The problems ``listener_options`` finds in a config that loads."""
        error = self.assertRaises(ConfigError, listener_options, self.load(**keys))
        return error.problems


class ConfigTests(_PkiTestCase):
    def test_defaults(self) -> None:
        """Only certfile and keyfile: every other TLS key has its default; paths from the INI's directory."""
        (listener,) = self.load().listeners
        self.assertEqual(listener.kind, "wss")
        self.assertEqual(
            listener.tls, TlsSection(certfile=self.base / "server.pem", keyfile=self.base / "server.key")
        )
        self.assertEqual(listener.tls.versions, ("tlsv1.3", "tlsv1.2"))
        self.assertEqual(
            (listener.tls.verify, listener.tls.fail_if_no_peer_cert, listener.tls.depth),
            ("verify_none", False, 10),
        )
        self.assertEqual(
            (listener.tls.handshake_timeout, listener.tls.client_cert_identity, listener.tls.ciphers),
            (15.0, "none", None),
        )

    def test_all_keys(self) -> None:
        """Every wss key is read and converted."""
        (listener,) = self.load(
            bind="127.0.0.1:33034",
            path="/cs",
            mountpoint="tls/",
            password="${KEY_PASSWORD}",
            cacertfile="ca.pem",
            verify="verify_peer",
            fail_if_no_peer_cert="true",
            depth="2",
            versions="tlsv1.1, TLSv1.2",
            ciphers="ECDHE+AESGCM",
            handshake_timeout="5s",
            client_cert_identity="cn",
        ).listeners
        self.assertEqual(
            listener,
            ListenerSection(
                kind="wss",
                name="x",
                host="127.0.0.1",
                port=33034,
                path="/cs",
                mountpoint="tls/",
                tls=TlsSection(
                    certfile=self.base / "server.pem",
                    keyfile=self.base / "server.key",
                    password=PASSWORD,
                    cacertfile=self.base / "ca.pem",
                    verify="verify_peer",
                    fail_if_no_peer_cert=True,
                    depth=2,
                    versions=("tlsv1.2", "tlsv1.1"),
                    ciphers="ECDHE+AESGCM",
                    handshake_timeout=5.0,
                    client_cert_identity="cn",
                ),
            ),
        )

    def test_password_never_shown(self) -> None:
        """The key password is not in the repr, nor in a problem line about it."""
        (listener,) = self.load(password="${KEY_PASSWORD}").listeners
        self.assertNotIn(PASSWORD, repr(listener))
        problems = self.problems(password="${{oops")
        self.assertEqual(problems, ["gw.ini: [listeners.wss.x] password: malformed ${...}, write ${NAME}"])

    def test_problem_lines(self) -> None:
        """Each bad wss key gives exactly this line."""
        cases = [
            (
                {"certfile": ""},
                "gw.ini: [listeners.wss.x] certfile: missing, expected the path of a PEM file",
            ),
            (
                {"verify": "verify_peer"},
                "gw.ini: [listeners.wss.x] cacertfile: missing, verify_peer needs the CA file that signs "
                "client certificates",
            ),
            (
                {"verify": "yes"},
                "gw.ini: [listeners.wss.x] verify: expected one of verify_none, verify_peer, got 'yes'",
            ),
            (
                {"client_cert_identity": "cn"},
                "gw.ini: [listeners.wss.x] client_cert_identity: needs verify = verify_peer, "
                "got verify = verify_none",
            ),
            (
                {"client_cert_identity": "dn"},
                "gw.ini: [listeners.wss.x] client_cert_identity: expected one of none, cn, got 'dn'",
            ),
            (
                {"fail_if_no_peer_cert": "true"},
                "gw.ini: [listeners.wss.x] fail_if_no_peer_cert: needs verify = verify_peer, "
                "got verify = verify_none",
            ),
            (
                {"versions": "tlsv1.3,tlsv1.1"},
                "gw.ini: [listeners.wss.x] versions: expected consecutive versions, tlsv1.2 missing, "
                "got 'tlsv1.3,tlsv1.1'",
            ),
            (
                {"versions": "sslv3"},
                "gw.ini: [listeners.wss.x] versions: expected versions among tlsv1.3, tlsv1.2, tlsv1.1, "
                "tlsv1, got 'sslv3'",
            ),
            ({"depth": "-1"}, "gw.ini: [listeners.wss.x] depth: expected an integer from 0 to 100, got '-1'"),
            (
                {"ciphers": "A B"},
                "gw.ini: [listeners.wss.x] ciphers: expected an OpenSSL cipher string without spaces, "
                "got 'A B'",
            ),
            (
                {"handshake_timeout": "0"},
                "gw.ini: [listeners.wss.x] handshake_timeout: must be greater than 0, got '0'",
            ),
        ]
        for keys, line in cases:
            self.assertEqual(self.problems(**keys), [line], keys)

    def test_missing_certfile_and_keyfile(self) -> None:
        """A wss section without certfile and keyfile says so for both."""
        problems = self.assertRaises(
            ConfigError, config_from_string, "[listeners.wss.x]\nbind = 1\n"
        ).problems
        self.assertEqual(
            problems,
            [
                "gw.ini: [listeners.wss.x] certfile: missing, expected the path of a PEM file",
                "gw.ini: [listeners.wss.x] keyfile: missing, expected the path of a PEM file",
            ],
        )

    def test_tls_keys_only_in_wss(self) -> None:
        """A ws listener has no TLS keys."""
        problems = self.assertRaises(
            ConfigError, config_from_string, "[listeners.ws.x]\nbind = 1\ncertfile = a.pem\n"
        ).problems
        self.assertEqual(problems, ["gw.ini: [listeners.ws.x] certfile: unknown option"])

    def test_ws_and_wss_share_ports(self) -> None:
        """A ws and a wss listener cannot bind the same address."""
        text = "[listeners.ws.a]\nbind = 9000\n" + wss(bind="0.0.0.0:9000")
        problems = self.assertRaises(ConfigError, config_from_string, text, base_dir=self.base).problems
        self.assertEqual(
            problems, ["gw.ini: [listeners.wss.x] bind: 0.0.0.0:9000 is already used by [listeners.ws.a]"]
        )

    def test_several_listeners(self) -> None:
        """ws and wss listeners side by side keep file order."""
        text = "[listeners.ws.a]\nbind = 9000\n" + wss(bind="9001") + wss(bind="9002").replace(".x]", ".y]")
        config = config_from_string(text, base_dir=self.base)
        self.assertEqual(
            [(lis.kind, lis.name) for lis in config.listeners], [("ws", "a"), ("wss", "x"), ("wss", "y")]
        )


class CertificateOptionsTests(_PkiTestCase):
    def context(self, **keys: str) -> SSL.Context:
        options = listener_options(self.load(**keys))["wss.x"]
        return options.getContext()

    def test_plain_key(self) -> None:
        """Certificate and key load; without verify_peer no client certificate is asked for."""
        context = self.context()
        self.assertEqual(context.get_verify_mode(), SSL.VERIFY_NONE)

    def test_encrypted_key(self) -> None:
        """An encrypted key with its password (from the environment) loads."""
        self.context(keyfile="server-encrypted.key", password="${KEY_PASSWORD}")

    def test_verify_peer(self) -> None:
        """verify_peer asks for a certificate; fail_if_no_peer_cert adds the flag; depth is set."""
        context = self.context(verify="verify_peer", cacertfile="ca.pem", depth="3")
        self.assertEqual(context.get_verify_mode() & SSL.VERIFY_PEER, SSL.VERIFY_PEER)
        self.assertEqual(context.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT, 0)
        self.assertEqual(context.get_verify_depth(), 3)
        strict = self.context(verify="verify_peer", cacertfile="ca.pem", fail_if_no_peer_cert="true")
        self.assertTrue(strict.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT)
        self.assertEqual(strict.get_verify_depth(), 10)

    def test_versions(self) -> None:
        """Versions not listed are switched off."""
        flags = {
            "tlsv1": SSL.OP_NO_TLSv1,
            "tlsv1.1": SSL.OP_NO_TLSv1_1,
            "tlsv1.2": SSL.OP_NO_TLSv1_2,
            "tlsv1.3": SSL.OP_NO_TLSv1_3,
        }
        for versions, off in [
            ("tlsv1.3,tlsv1.2", {"tlsv1", "tlsv1.1"}),
            ("tlsv1.3", {"tlsv1", "tlsv1.1", "tlsv1.2"}),
            ("tlsv1.2,tlsv1.1,tlsv1", {"tlsv1.3"}),
        ]:
            options = self.context(versions=versions).set_options(0)
            self.assertEqual({name for name, flag in flags.items() if options & flag}, off, versions)

    def test_wrong_password(self) -> None:
        """A wrong key password is one line naming the file, without the password."""
        problems = self.tls_problems(keyfile="server-encrypted.key", password="not the password")
        self.assertEqual(
            problems,
            [
                f"gw.ini: [listeners.wss.x] keyfile: cannot decrypt {self.base / 'server-encrypted.key'}: "
                "wrong password"
            ],
        )
        self.assertNotIn("not the password", problems[0])

    def test_encrypted_key_without_password(self) -> None:
        """An encrypted key and no password: says to set one."""
        self.assertEqual(
            self.tls_problems(keyfile="server-encrypted.key"),
            [
                f"gw.ini: [listeners.wss.x] keyfile: {self.base / 'server-encrypted.key'} is encrypted: "
                "set password"
            ],
        )

    def test_unreadable_files(self) -> None:
        """A missing certificate, key or CA file is one line naming it."""
        missing = self.base / "missing.pem"
        for key in ("certfile", "keyfile", "cacertfile"):
            keys = {key: "missing.pem"}
            if key == "cacertfile":
                keys["verify"] = "verify_peer"
            self.assertEqual(
                self.tls_problems(**keys),
                [f"gw.ini: [listeners.wss.x] {key}: cannot read {missing}: No such file or directory"],
            )

    def test_not_pem(self) -> None:
        """A certificate file without a certificate, or a key file without a key, is named."""
        (self.base / "junk.pem").write_text("hello\n")
        self.assertEqual(
            self.tls_problems(certfile="junk.pem"),
            [f"gw.ini: [listeners.wss.x] certfile: no PEM certificate in {self.base / 'junk.pem'}"],
        )
        self.assertEqual(
            self.tls_problems(keyfile="junk.pem"),
            [f"gw.ini: [listeners.wss.x] keyfile: no usable PEM private key in {self.base / 'junk.pem'}"],
        )

    def test_key_not_matching(self) -> None:
        """A key that does not belong to the certificate is one line naming both files."""
        self.assertEqual(
            self.tls_problems(keyfile="CP1.key"),
            [
                f"gw.ini: [listeners.wss.x] keyfile: the key in {self.base / 'CP1.key'} does not match "
                f"the certificate in {self.base / 'server.pem'}"
            ],
        )

    def test_bad_ciphers(self) -> None:
        """A cipher string matching nothing is named."""
        self.assertEqual(
            self.tls_problems(ciphers="NOTHING-MATCHES"),
            ["gw.ini: [listeners.wss.x] ciphers: no usable cipher in 'NOTHING-MATCHES'"],
        )

    def test_problems_of_every_listener(self) -> None:
        """Problems of several listeners are collected."""
        text = wss(certfile="a.pem") + wss(bind="1", keyfile="b.key").replace(".x]", ".y]")
        config = config_from_string(text, base_dir=self.base)
        problems = self.assertRaises(ConfigError, listener_options, config).problems
        self.assertEqual(len(problems), 2)
        self.assertTrue(problems[0].startswith("gw.ini: [listeners.wss.x] certfile: cannot read "))
        self.assertTrue(problems[1].startswith("gw.ini: [listeners.wss.y] keyfile: cannot read "))


def handshake(server: SSL.Context, client: ssl.SSLContext) -> str:
    """A TLS handshake in memory between ``server`` and ``client``: the version agreed, or ``SSL.Error``."""
    accepting = SSL.Connection(server, None)
    accepting.set_accept_state()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connecting = client.wrap_bio(incoming, outgoing, server_hostname="localhost")
    for _ in range(10):
        try:
            connecting.do_handshake()
        except ssl.SSLWantReadError:
            pass
        sent = outgoing.read()
        if sent:
            accepting.bio_write(sent)
        try:
            accepting.do_handshake()
        except SSL.WantReadError:
            pass
        else:
            if connecting.version() is not None:
                return accepting.get_protocol_version_name()
        while True:
            try:
                incoming.write(accepting.bio_read(65536))
            except SSL.WantReadError:
                break
    raise AssertionError("the handshake did not finish")


class ListenerContextTests(_PkiTestCase):
    """What ``ListenerCertificateOptions`` adds to Twisted's context, seen by a client."""

    def context(self, **keys: str) -> SSL.Context:
        options = listener_options(self.load(**keys))["wss.x"]
        self.assertIsInstance(options, ListenerCertificateOptions)
        return options.getContext()

    def client(self, version: ssl.TLSVersion | None = None, cid: str | None = None) -> ssl.SSLContext:
        if cid is None:
            return client_context(self.pki.ca_cert, version=version)
        return client_context(
            self.pki.ca_cert, self.pki.client_certs[cid], self.pki.client_keys[cid], version=version
        )

    def test_legacy_version_negotiated(self) -> None:
        """tlsv1.1 listed: a TLS 1.1 client gets in (OpenSSL 3 needs security level 0 for it)."""
        context = self.context(versions="tlsv1.2,tlsv1.1")
        self.assertEqual(handshake(context, self.client(ssl.TLSVersion.TLSv1_1)), "TLSv1.1")
        self.assertRaises(SSL.Error, handshake, self.context(), self.client(ssl.TLSVersion.TLSv1_1))

    def test_legacy_keeps_the_ciphers(self) -> None:
        """Listing a legacy version changes the security level, not the ciphers Twisted chose."""
        for ciphers in ({}, {"ciphers": "ECDHE+AESGCM"}):
            with self.subTest(ciphers=ciphers):
                legacy = SSL.Connection(self.context(versions="tlsv1.2,tlsv1.1,tlsv1", **ciphers), None)
                modern = SSL.Connection(self.context(**ciphers), None)
                self.assertEqual(legacy.get_cipher_list(), modern.get_cipher_list())

    def test_client_without_certificate(self) -> None:
        """verify_peer: a client without a certificate gets in unless fail_if_no_peer_cert is true."""
        lenient = self.context(verify="verify_peer", cacertfile="ca.pem")
        self.assertEqual(handshake(lenient, self.client()), "TLSv1.3")
        strict = self.context(verify="verify_peer", cacertfile="ca.pem", fail_if_no_peer_cert="true")
        self.assertEqual(handshake(strict, self.client(cid="CP1")), "TLSv1.3")
        # TLS 1.2: the server's refusal ends the handshake itself (under 1.3 it comes after).
        self.assertRaises(SSL.Error, handshake, strict, self.client(ssl.TLSVersion.TLSv1_2))

    def test_adjusted_once(self) -> None:
        """The context is adjusted before its first connection and handed out unchanged afterwards
        (pyOpenSSL refuses changes to a context a connection uses)."""
        options = listener_options(
            self.load(verify="verify_peer", cacertfile="ca.pem", versions="tlsv1.2,tlsv1.1")
        )
        context = options["wss.x"].getContext()
        SSL.Connection(context, None)
        self.assertIs(options["wss.x"].getContext(), context)
        self.assertEqual(context.get_verify_mode() & SSL.VERIFY_FAIL_IF_NO_PEER_CERT, 0)


class StartupTests(_PkiTestCase):
    """twistd's Options: a bad TLS file stops start-up with one line and exit status 1."""

    def run_options(self, **keys: str) -> tuple[Any, str]:
        path = self.base / "gw.ini"
        path.write_text(wss(**keys))
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        options = Options()
        try:
            options.parseOptions(["--config", str(path)])
        except SystemExit as e:
            return e.code, stderr.getvalue()
        return options, stderr.getvalue()

    def test_right_password(self) -> None:
        """The encrypted key with its password: Options holds the wss listener's CertificateOptions."""
        options, stderr = self.run_options(keyfile="server-encrypted.key", password=PASSWORD)
        self.assertEqual(stderr, "")
        self.assertEqual(list(options.tls_options), ["wss.x"])

    def test_wrong_password(self) -> None:
        """A wrong password: exit status 1 and one line naming the key file; no traceback."""
        code, stderr = self.run_options(keyfile="server-encrypted.key", password="wrong")
        self.assertEqual(code, 1)
        path = self.base / "gw.ini"
        key = path.parent.absolute() / "server-encrypted.key"
        self.assertEqual(
            stderr,
            f"{path}: [listeners.wss.x] keyfile: cannot decrypt {key}: wrong password\n",
        )


class _FakeCertificate:
    def __init__(self, certificate: x509.Certificate) -> None:
        self._certificate = certificate

    def to_cryptography(self) -> x509.Certificate:
        return self._certificate


class _FakeTransport:
    def __init__(self, certificate: Any) -> None:
        self.certificate = certificate

    def getPeerCertificate(self) -> Any:
        return self.certificate


class PeerIdentityTests(_PkiTestCase):
    def test_identity(self) -> None:
        """CN and DN come from the peer certificate."""
        certificate = x509.load_pem_x509_certificate(Path(self.pki.client_certs["CP1"]).read_bytes())
        identity = peer_identity(_FakeTransport(_FakeCertificate(certificate)))
        self.assertEqual(identity, PeerIdentity(cn="CP1", dn="CN=CP1,O=ocppgw development"))

    def test_no_identity(self) -> None:
        """No TLS, or no certificate: None."""
        self.assertIsNone(peer_identity(object()))
        self.assertIsNone(peer_identity(_FakeTransport(None)))

    def test_refusal(self) -> None:
        """Only client_cert_identity = cn binds the CN to the cid."""
        (listener,) = self.load(
            verify="verify_peer", cacertfile="ca.pem", client_cert_identity="cn"
        ).listeners
        identity = PeerIdentity(cn="CP1", dn="CN=CP1")
        self.assertIsNone(identity_refusal(listener.tls, "CP1", identity))
        self.assertEqual(
            identity_refusal(listener.tls, "CP2", identity), "certificate CN 'CP1' is not the charge point id"
        )
        self.assertEqual(identity_refusal(listener.tls, "CP1", None), "no client certificate")
        (plain,) = self.load().listeners
        self.assertIsNone(identity_refusal(plain.tls, "CP2", identity))
        self.assertIsNone(identity_refusal(None, "CP2", None))


class DevCertsTests(SynchronousTestCase):
    def test_files(self) -> None:
        """The script writes the CA, server and client files; client CNs are the cids."""
        made = make_dev_certs(self.mktemp(), ["CP1", "CP-2"], intermediate=True, key_password="pw")
        names = sorted(p.name for p in made.directory.iterdir())
        self.assertEqual(
            names,
            sorted(
                [
                    "ca.pem",
                    "ca.key",
                    "intermediate.pem",
                    "intermediate.key",
                    "server.pem",
                    "server.key",
                    "server-encrypted.key",
                    "CP1.pem",
                    "CP1.key",
                    "CP1-chain.pem",
                    "CP-2.pem",
                    "CP-2.key",
                    "CP-2-chain.pem",
                ]
            ),
        )
        certificate = x509.load_pem_x509_certificate(made.client_certs["CP-2"].read_bytes())
        self.assertEqual(certificate.subject.rfc4514_string(), "CN=CP-2,O=ocppgw development")
        server = x509.load_pem_x509_certificate(made.server_cert.read_bytes())
        names_ = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(names_.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual([str(ip) for ip in names_.get_values_for_type(x509.IPAddress)], ["127.0.0.1"])
        self.assertEqual(made.server_key.stat().st_mode & 0o077, 0)


class ExampleTests(_PkiTestCase):
    def test_example_wss_section(self) -> None:
        """examples/gw.ini's commented-out wss listener documents every TLS key and loads once enabled."""
        text = (Path(__file__).resolve().parent.parent / "examples" / "gw.ini").read_text(encoding="utf-8")
        block = text.split("; [listeners.wss.default]\n", 1)[1].splitlines()
        keys: dict[str, str] = {}
        for number, line in enumerate(block):
            match = re.fullmatch(r"; ([a-z_]+) = (.*)", line)
            if match:
                self.assertTrue(block[number - 1].startswith("; "), f"no comment above {line!r}")
                keys[match[1]] = match[2]
        self.assertEqual(
            set(keys), {"bind", "path", "mountpoint"} | {f.name for f in dataclasses.fields(TlsSection)}
        )
        keys.update(
            certfile="server.pem",
            keyfile="server-encrypted.key",
            cacertfile="ca.pem",
            password="${KEY_PASSWORD}",
        )
        (listener,) = config_from_string(
            "[listeners.wss.default]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()),
            base_dir=self.base,
            environ={"KEY_PASSWORD": PASSWORD},
        ).listeners
        assert listener.tls is not None
        self.assertEqual(
            dataclasses.replace(listener.tls, ciphers=None),
            TlsSection(
                certfile=self.base / "server.pem",
                keyfile=self.base / "server-encrypted.key",
                password=PASSWORD,
                cacertfile=self.base / "ca.pem",
            ),
        )
        self.assertEqual((listener.port, listener.path), (33034, "/ocpp"))
        listener_options(config_from_string(wss(ciphers=keys["ciphers"]), base_dir=self.base))


class _RefusingSSLReactor(MemoryReactorClock):
    """A memory reactor on which listening on the wss port (33034) fails as if the port were taken.

    wss listeners listen through listenTCP, TLS being layered under the limits (ocppgw.ws.limits).
    """

    def listenTCP(self, port: int, *args: Any, interface: str = "", **kwargs: Any) -> Any:
        if port == 33034:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        return super().listenTCP(port, *args, interface=interface, **kwargs)


class ServiceTests(_PkiTestCase):
    def config(self) -> Any:
        text = "[listeners.ws.a]\nbind = 127.0.0.1:0\n" + wss(bind="127.0.0.1:33034")
        return config_from_string(text, base_dir=self.base)

    def test_wss_listener_bound_with_its_options(self) -> None:
        """A wss listener listens on TCP with the limits, then TLS with its CertificateOptions (as
        listenSSL would layer it, under the limits)."""
        reactor = MemoryReactorClock()
        service = GatewayService(self.config(), reactor, link=FakeLink())
        service.privilegedStartService()
        ((port, limits, _backlog, interface),) = [s for s in reactor.tcpServers if s[0] == 33034]
        wss_listener = self.config().listeners[1]
        self.assertEqual((port, interface), (33034, "127.0.0.1"))
        self.assertIs(limits, service.getServiceNamed("wss.x").factory)
        self.assertEqual(sorted(service.tls_contexts), ["wss.x"])
        self.assertIsInstance(limits.wrappedFactory, TLSMemoryBIOFactory)
        factory = limits.wrappedFactory.wrappedFactory
        self.assertEqual(factory.listener, wss_listener)
        self.assertIs(factory.protocol, OcppTlsServerProtocol)
        self.assertEqual([child.name for child in service.listeners], ["ws.a", "wss.x"])

    def test_bind_failure(self) -> None:
        """A wss listener that cannot bind stops start-up with one line, as a ws one does."""
        service = GatewayService(self.config(), _RefusingSSLReactor(), link=FakeLink())
        with self.assertRaises(StartupError) as raised:
            service.privilegedStartService()
        (line,) = raised.exception.problems
        self.assertTrue(
            line.startswith("gw.ini: [listeners.wss.x] bind: cannot listen on 127.0.0.1:33034"), line
        )

    def test_bad_files_when_built_directly(self) -> None:
        """Built without tls_options (as tests do), a bad file is a ConfigError naming it."""
        config = config_from_string(wss(keyfile="CP1.key"), base_dir=self.base)
        error = self.assertRaises(ConfigError, GatewayService, config, MemoryReactorClock(), link=FakeLink())
        self.assertIn("[listeners.wss.x] keyfile: the key in ", error.problems[0])
