"""Both paho links over TLS to a private Mosquitto with a TLS listener, using the dev PKI."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from ocppgw.config import MqttSection
from ocppgw.metrics import Metrics
from ocppgw.mqtt.link import PahoLink
from ocppgw.mqtt.reactor_loop import PahoReactorLink
from ocppgw.mqtt.thread_loop import PahoThreadLink
from tests.devpki import make_dev_certs
from tests.support import MosquittoBroker, poll_until

_ids = itertools.count()


class MqttTlsTests(TestCase):
    timeout = 60
    require_certificate = False
    link_class: type[PahoLink] = PahoThreadLink

    @inlineCallbacks
    def setUp(self) -> Any:
        self.pki = make_dev_certs(Path(self.mktemp()).absolute(), ["gw1"], key_password="gw pass")
        self.rogue = make_dev_certs(Path(self.mktemp()).absolute(), [], ca_name="rogue CA")
        tls = {
            "cafile": self.pki.ca_cert,
            "certfile": self.pki.server_cert,
            "keyfile": self.pki.server_key,
        }
        if self.require_certificate:
            tls["require_certificate"] = "true"
        self.broker = MosquittoBroker(self, tls=tls)
        yield self.broker.start()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def link(self, **keys: Any) -> PahoLink:
        self.metrics = Metrics()
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.broker.tls_port,
            "client_id": f"tls-{next(_ids)}",
            "reconnect_delay_min": 0.2,
            "reconnect_delay_max": 0.5,
            "tls": True,
            "cacertfile": self.pki.ca_cert,
            **keys,
        }
        link = self.link_class(reactor, MqttSection(**settings), self.metrics)
        self.addCleanup(link.stop, 5)
        link.start()
        return link

    def refusals(self) -> list[str]:
        return [
            e["reason"]
            for e in self.events
            if e.get("log_namespace", "").endswith(self.link_class.__name__)
            and "TLS to MQTT broker" in e["log_format"]
        ]

    @inlineCallbacks
    def assertRefused(self, link: PahoLink, expected: str) -> Any:
        """The link stays disconnected, counts refusals and logs one line however often it retries."""
        yield poll_until(lambda: self.metrics.total("mqtt_tls_refused") >= 2, timeout=15)
        self.assertFalse(link.connected)
        (reason,) = self.refusals()
        self.assertIn(expected, reason)


class ServerOnlyTests(MqttTlsTests):
    @inlineCallbacks
    def test_connects_with_the_right_ca(self) -> Any:
        link = self.link()
        yield poll_until(lambda: link.connected, timeout=15)
        self.assertEqual(self.refusals(), [])

    @inlineCallbacks
    def test_wrong_ca_refused(self) -> Any:
        link = self.link(cacertfile=self.rogue.ca_cert)
        yield self.assertRefused(link, "TLS handshake failed: CERTIFICATE_VERIFY_FAILED")

    @inlineCallbacks
    def test_hostname_mismatch_refused(self) -> Any:
        """The certificate names localhost and 127.0.0.1, not broker.example."""
        link = self.link(tls_server_name="broker.example")
        yield self.assertRefused(link, "does not match broker.example")

    @inlineCallbacks
    def test_hostname_mismatch_accepted_without_verify_hostname(self) -> Any:
        link = self.link(tls_server_name="broker.example", verify_hostname=False)
        yield poll_until(lambda: link.connected, timeout=15)

    @inlineCallbacks
    def test_reload_after_ca_rotation(self) -> Any:
        """Refused while its CA file holds the wrong CA, the link connects once the file holds the right
        one and reload_tls has run: no restart."""
        path = Path(self.mktemp()).absolute()
        path.write_bytes(self.rogue.ca_cert.read_bytes())
        link = self.link(cacertfile=path)
        yield poll_until(lambda: self.metrics.total("mqtt_tls_refused") >= 1, timeout=15)
        path.write_bytes(self.pki.ca_cert.read_bytes())
        self.assertEqual(link.reload_tls(), [])
        yield poll_until(lambda: link.connected, timeout=15)

    @inlineCallbacks
    def test_host_name_checked(self) -> Any:
        """A DNS name in the certificate (localhost) passes the service-identity check."""
        link = self.link(host="localhost")
        yield poll_until(lambda: link.connected, timeout=15)


class ClientCertificateTests(MqttTlsTests):
    require_certificate = True

    @inlineCallbacks
    def test_client_certificate(self) -> Any:
        link = self.link(certfile=self.pki.client_certs["gw1"], keyfile=self.pki.client_keys["gw1"])
        yield poll_until(lambda: link.connected, timeout=15)

    @inlineCallbacks
    def test_without_certificate_refused(self) -> Any:
        """Mosquitto drops the client (under TLS 1.3 right after the handshake): the link never connects."""
        link = self.link()
        yield poll_until(lambda: self.metrics.total("mqtt_connect_attempts") >= 3, timeout=15)
        self.assertFalse(link.connected)


class ReactorServerOnlyTests(ServerOnlyTests):
    link_class = PahoReactorLink


class ReactorClientCertificateTests(ClientCertificateTests):
    link_class = PahoReactorLink
