"""``[mqtt]`` TLS keys and ``ocppgw.tls.broker``: the broker context, start-up errors, the name check."""

from __future__ import annotations

import io
import shutil
import socket
import ssl
import sys
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.config import ConfigError, config_from_string
from ocppgw.tap import Options
from ocppgw.tls.broker import BrokerContext, broker_context, check_mqtt_tls
from ocppgw.tls.pem import TlsConfigError
from tests.devpki import make_dev_certs

LISTENER = "[listeners.ws.a]\nbind = 127.0.0.1:0\n"


def _ca_names(context: ssl.SSLContext) -> list[str]:
    return [dict(field[0] for field in ca["subject"])["commonName"] for ca in context.get_ca_certs()]


PASSWORD = "gw pass"


class MqttTlsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = make_dev_certs(self.mktemp(), ["gw1"], key_password=PASSWORD)
        self.base = self.pki.directory

    def load(self, text: str) -> Any:
        return config_from_string("[mqtt]\n" + text + LISTENER, base_dir=self.base, source="gw.ini")

    def problem(self, text: str) -> str:
        error = self.assertRaises(ConfigError, check_mqtt_tls, self.load(text))
        (line,) = error.problems
        self.assertNotIn("\n", line)
        return line

    def test_defaults(self) -> None:
        mqtt = self.load("").mqtt
        self.assertEqual((mqtt.tls, mqtt.verify_hostname, mqtt.tls_server_name), (False, True, None))
        self.assertIsNone(broker_context(mqtt))

    def test_keys(self) -> None:
        mqtt = self.load(
            "tls = true\ncacertfile = ca.pem\ncertfile = gw1.pem\nkeyfile = gw1.key\n"
            f"keyfile_password = {PASSWORD}\nverify_hostname = false\ntls_server_name = broker.example\n"
        ).mqtt
        self.assertEqual(mqtt.cacertfile, self.base / "ca.pem")
        self.assertEqual((mqtt.certfile, mqtt.keyfile), (self.base / "gw1.pem", self.base / "gw1.key"))
        self.assertEqual((mqtt.verify_hostname, mqtt.tls_server_name), (False, "broker.example"))
        self.assertNotIn(PASSWORD, repr(mqtt))

    def test_certfile_without_keyfile(self) -> None:
        error = self.assertRaises(ConfigError, self.load, "tls = true\ncertfile = gw1.pem\n")
        self.assertEqual(
            error.problems,
            ["gw.ini: [mqtt] keyfile: missing, expected the path of a PEM file (set with certfile)"],
        )

    def test_context(self) -> None:
        context = broker_context(self.load("tls = true\ncacertfile = ca.pem\n").mqtt)
        assert isinstance(context, BrokerContext)
        self.assertEqual((context.check_hostname, context.verify_mode), (False, ssl.CERT_REQUIRED))
        self.assertEqual(context.expected_name, "127.0.0.1")

    def test_no_hostname_check_when_off(self) -> None:
        context = broker_context(self.load("tls = true\ncacertfile = ca.pem\nverify_hostname = false\n").mqtt)
        assert context is not None
        self.assertIsNone(context.expected_name)

    def test_reload_serves_later_connections(self) -> None:
        """reload() reads the files again; every later wrap_socket (paho's next connect) uses them."""
        config = self.load("tls = true\ncacertfile = ca.pem\n").mqtt
        context = broker_context(config)
        assert context is not None
        other = make_dev_certs(self.mktemp(), [], ca_name="second CA")
        shutil.copy(other.ca_cert, self.base / "ca.pem")
        context.reload(config)
        current = context._current
        assert isinstance(current, BrokerContext)
        self.assertEqual(_ca_names(current), ["second CA"])
        self.assertEqual(_ca_names(context), ["ocppgw development CA"])
        self.assertEqual(current.expected_name, "127.0.0.1")
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        with context.wrap_socket(a, do_handshake_on_connect=False) as wrapped:
            self.assertIs(wrapped.context, current)

    def test_failed_reload_keeps_the_files(self) -> None:
        """A reload that cannot read the files raises, naming the key, and changes nothing."""
        config = self.load("tls = true\ncacertfile = ca.pem\n").mqtt
        context = broker_context(config)
        assert context is not None
        (self.base / "ca.pem").write_text("not a certificate\n")
        error = self.assertRaises(TlsConfigError, context.reload, config)
        self.assertEqual(error.key, "cacertfile")
        self.assertIsNone(context._current)

    def test_unreadable_cacertfile(self) -> None:
        line = self.problem("tls = true\ncacertfile = missing.pem\n")
        self.assertTrue(
            line.startswith(f"gw.ini: [mqtt] cacertfile: cannot read {self.base / 'missing.pem'}"), line
        )

    def test_not_a_certificate(self) -> None:
        line = self.problem("tls = true\ncacertfile = gw1.key\n")
        self.assertEqual(line, f"gw.ini: [mqtt] cacertfile: no PEM certificate in {self.base / 'gw1.key'}")

    def test_wrong_key_password(self) -> None:
        encrypted = self.pki.server_key_encrypted
        assert encrypted is not None
        line = self.problem(
            f"tls = true\ncertfile = server.pem\nkeyfile = {encrypted.name}\nkeyfile_password = nope\n"
        )
        self.assertEqual(line, f"gw.ini: [mqtt] keyfile: cannot decrypt {encrypted}: wrong password")
        self.assertNotIn("nope", line)

    def test_encrypted_key_without_password(self) -> None:
        encrypted = self.pki.server_key_encrypted
        assert encrypted is not None
        line = self.problem(f"tls = true\ncertfile = server.pem\nkeyfile = {encrypted.name}\n")
        self.assertEqual(line, f"gw.ini: [mqtt] keyfile: {encrypted} is encrypted: set keyfile_password")

    def test_right_key_password(self) -> None:
        encrypted = self.pki.server_key_encrypted
        assert encrypted is not None
        check_mqtt_tls(
            self.load(
                f"tls = true\ncertfile = server.pem\nkeyfile = {encrypted.name}\n"
                f"keyfile_password = {PASSWORD}\n"
            )
        )

    def test_startup_stops_with_one_line(self) -> None:
        """twistd's Options: an unreadable [mqtt] file stops start-up with exit status 1 and one line."""
        path = self.base / "gw.ini"
        path.write_text("[mqtt]\ntls = true\ncacertfile = missing.pem\n" + LISTENER)
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as raised:
            Options().parseOptions(["--config", str(path)])
        self.assertEqual(raised.exception.code, 1)
        (line,) = stderr.getvalue().splitlines()
        self.assertTrue(line.startswith(f"{path}: [mqtt] cacertfile: cannot read "), line)

    def test_mismatched_key(self) -> None:
        line = self.problem("tls = true\ncertfile = server.pem\nkeyfile = ca.key\n")
        self.assertIn("keyfile: the key in", line)


class NameCheckTests(SynchronousTestCase):
    """``BrokerContext.name_problem``: service-identity on the server certificate (localhost, 127.0.0.1)."""

    def setUp(self) -> None:
        pki = make_dev_certs(self.mktemp(), [])
        cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        self.der = cert.public_bytes(Encoding.DER)
        self.context = BrokerContext(ssl.PROTOCOL_TLS_CLIENT)

    def problem(self, name: str | None) -> str | None:
        self.context.expected_name = name
        return self.context.name_problem(self.der)

    def test_matches(self) -> None:
        self.assertIsNone(self.problem("localhost"))
        self.assertIsNone(self.problem("127.0.0.1"))
        self.assertIsNone(self.problem(None))

    def test_mismatch(self) -> None:
        problem = self.problem("broker.example")
        assert problem is not None
        self.assertIn("does not match broker.example", problem)
        problem = self.problem("10.0.0.1")
        assert problem is not None
        self.assertIn("does not match 10.0.0.1", problem)

    def test_no_certificate(self) -> None:
        self.context.expected_name = "localhost"
        self.assertEqual(self.context.name_problem(None), "the broker sent no certificate")
