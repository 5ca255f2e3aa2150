"""Certificate reload (SIGHUP): ``GatewayService.reload_certificates`` and the signal handler."""

from __future__ import annotations

import shutil
import signal
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.config import config_from_string
from ocppgw.service import GatewayService
from ocppgw.tls.listener import ReloadableContextFactory
from tests.devpki import make_dev_certs
from tests.fakes import FakeMqttLink
from tests.support import ThreadedMemoryReactorClock
from tests.test_service import FakeLink

CONFIG = (
    "[listeners.ws.a]\nbind = 127.0.0.1:0\n"
    "[listeners.wss.x]\nbind = 127.0.0.1:0\ncertfile = server.pem\nkeyfile = server.key\n"
)


def serial(factory: ReloadableContextFactory) -> int:
    return factory.options.certificate.serial_number


class ReloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = make_dev_certs(self.mktemp(), ["CP1"])
        self.other = make_dev_certs(self.mktemp(), [], ca_name="second CA", key_password="pw")
        self.config = config_from_string(CONFIG, base_dir=self.pki.directory, source="gw.ini")
        self.reactor = ThreadedMemoryReactorClock()
        self.service = GatewayService(self.config, self.reactor, link=FakeLink())
        self.events: list[dict[str, Any]] = []
        self.patch(GatewayService, "_log", Logger(observer=self.events.append))
        self.factory = self.service.tls_contexts["wss.x"]
        self.before = self.factory.options

    def errors(self) -> list[str]:
        return [e["problem"] for e in self.events if "problem" in e]

    def test_holder_delegates(self) -> None:
        """The holder hands out the current options' context (what each new TLS connection asks for)."""
        self.assertIsInstance(self.factory, ReloadableContextFactory)
        self.assertIs(self.factory.getContext(), self.before.getContext())

    def test_reload_swaps(self) -> None:
        """New files replace the options; the certificate handed out is the new one."""
        shutil.copy(self.other.server_cert, self.pki.server_cert)
        shutil.copy(self.other.server_key, self.pki.server_key)
        self.assertEqual(self.service.reload_certificates(), [])
        self.assertIsNot(self.factory.options, self.before)
        self.assertNotEqual(serial(self.factory), self.before.certificate.serial_number)
        self.assertIsNot(self.factory.getContext(), self.before.getContext())
        self.assertEqual(self.errors(), [])

    def assertKeptOld(self, expected: str) -> None:
        (line,) = self.service.reload_certificates()
        self.assertIs(self.factory.options, self.before)
        self.assertEqual(self.errors(), [line])
        self.assertIn(expected, line)
        self.assertTrue(line.startswith("gw.ini: [listeners.wss.x] "), line)
        self.assertNotIn("\n", line)

    def test_unreadable_file_keeps_old(self) -> None:
        self.pki.server_cert.write_text("not a certificate\n")
        self.assertKeptOld(f"no PEM certificate in {self.pki.server_cert}")

    def test_mismatched_key_keeps_old(self) -> None:
        shutil.copy(self.other.server_key, self.pki.server_key)
        self.assertKeptOld(f"the key in {self.pki.server_key} does not match")

    def test_encrypted_key_without_password_keeps_old(self) -> None:
        """A key replaced by an encrypted one (no password configured) keeps the old pair."""
        assert self.other.server_key_encrypted is not None
        shutil.copy(self.other.server_cert, self.pki.server_cert)
        shutil.copy(self.other.server_key_encrypted, self.pki.server_key)
        self.assertKeptOld(f"{self.pki.server_key} is encrypted")

    def test_missing_file_keeps_old(self) -> None:
        self.pki.server_key.unlink()
        self.assertKeptOld(f"cannot read {self.pki.server_key}")


class CaReloadTests(SynchronousTestCase):
    def test_cacertfile_reloaded(self) -> None:
        """With verify_peer, the CA certificates that sign client certificates are read again too."""
        pki = make_dev_certs(self.mktemp(), [])
        other = make_dev_certs(self.mktemp(), [], ca_name="second CA")
        text = CONFIG + "verify = verify_peer\ncacertfile = ca.pem\n"
        service = GatewayService(config_from_string(text, base_dir=pki.directory), Clock(), link=FakeLink())
        shutil.copy(other.ca_cert, pki.ca_cert)
        self.assertEqual(service.reload_certificates(), [])
        authorities = service.tls_contexts["wss.x"].options.trustRoot._caCerts
        self.assertEqual([c.get_subject().CN for c in authorities], ["second CA"])


class SighupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pki = make_dev_certs(self.mktemp(), [])
        self.config = config_from_string(CONFIG, base_dir=self.pki.directory, source="gw.ini")
        self.reactor = ThreadedMemoryReactorClock()
        self.calls: list[int] = []
        original = signal.signal(signal.SIGHUP, lambda signum, frame: self.calls.append(signum))
        self.addCleanup(signal.signal, signal.SIGHUP, original)

    def test_handler_reloads_and_chains(self) -> None:
        """startService installs a SIGHUP handler that schedules a reload in the reactor thread and
        calls the handler it replaced; stopService puts that one back."""
        previous = signal.getsignal(signal.SIGHUP)
        service = GatewayService(self.config, self.reactor, link=FakeLink(), sighup=True)
        reloads: list[bool] = []
        self.patch(service, "reload_certificates", lambda: reloads.append(True))
        service.startService()
        handler = signal.getsignal(signal.SIGHUP)
        self.assertIsNot(handler, previous)
        assert callable(handler)
        handler(signal.SIGHUP, None)
        self.assertEqual((reloads, self.calls), ([], [signal.SIGHUP]))
        self.reactor.pump()
        self.assertEqual(reloads, [True])
        service.stopService()
        self.reactor.advance(60)
        self.assertIs(signal.getsignal(signal.SIGHUP), previous)

    def test_not_installed_by_default(self) -> None:
        previous = signal.getsignal(signal.SIGHUP)
        service = GatewayService(self.config, self.reactor, link=FakeLink())
        service.startService()
        self.assertIs(signal.getsignal(signal.SIGHUP), previous)
        service.stopService()


class MqttReloadTests(SynchronousTestCase):
    """SIGHUP also re-reads the ``[mqtt]`` TLS files, through the link."""

    def setUp(self) -> None:
        pki = make_dev_certs(self.mktemp(), [])
        text = CONFIG + "[mqtt]\ntls = true\ncacertfile = ca.pem\n"
        self.link = FakeMqttLink()
        self.service = GatewayService(
            config_from_string(text, base_dir=pki.directory, source="gw.ini"), Clock(), link=self.link
        )
        self.events: list[dict[str, Any]] = []
        self.patch(GatewayService, "_log", Logger(observer=self.events.append))

    def test_link_reloaded_with_the_listeners(self) -> None:
        self.assertEqual(self.service.reload_certificates(), [])
        self.assertEqual(self.link.tls_reloads, 1)
        (names,) = [e["names"] for e in self.events if "names" in e]
        self.assertEqual(names, "wss.x, mqtt")

    def test_link_problem_reported_with_the_source(self) -> None:
        """The link's line, prefixed with the config file, is returned and logged."""
        self.link.tls_problems = [("cacertfile", "no PEM certificate in ca.pem; kept the previous files")]
        expected = "gw.ini: [mqtt] cacertfile: no PEM certificate in ca.pem; kept the previous files"
        self.assertEqual(self.service.reload_certificates(), [expected])
        self.assertEqual([e["problem"] for e in self.events if "problem" in e], [expected])
