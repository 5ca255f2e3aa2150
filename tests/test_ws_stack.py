"""``ocppgw.ws.stack.listener_stack``: the layers of one listener, built once, outside in."""

from __future__ import annotations

from typing import Any

from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.auth import AllowAll
from ocppgw.config import config_from_string
from ocppgw.core.router import Router
from ocppgw.metrics import Metrics
from ocppgw.ws.limits import ListenerLimits
from ocppgw.ws.proxy import ProxyProtocolFactory
from ocppgw.ws.server import OcppServerFactory
from ocppgw.ws.stack import listener_stack
from tests.fakes import FakeMqttLink


class ListenerStackTests(SynchronousTestCase):
    def build(self, listener_text: str, tls_context: Any = None) -> ListenerLimits:
        config = config_from_string("[listeners.ws.s]\nbind = 127.0.0.1:0\n" + listener_text)
        self.clock = Clock()
        metrics = Metrics()
        router = Router(config, FakeMqttLink(), self.clock, metrics)
        return listener_stack(
            config.listeners[0], config.gateway, router, AllowAll(), metrics, self.clock, tls_context
        )

    def test_plain(self) -> None:
        """ws: the limits wrap the WebSocket factory, which runs on the given reactor."""
        stack = self.build("")
        self.assertIsInstance(stack, ListenerLimits)
        self.assertIsInstance(stack.wrappedFactory, OcppServerFactory)
        self.assertIs(stack.wrappedFactory.reactor, self.clock)

    def test_all_layers_in_order(self) -> None:
        """limits -> PROXY header -> TLS -> WebSocket, each layer wrapping the next."""
        stack = self.build("proxy_protocol = true\n", tls_context=CertificateOptions())
        proxy = stack.wrappedFactory
        self.assertIsInstance(proxy, ProxyProtocolFactory)
        tls = proxy.wrappedFactory
        self.assertIsInstance(tls, TLSMemoryBIOFactory)
        self.assertIsInstance(tls.wrappedFactory, OcppServerFactory)

    def test_nodelay_passed_on_and_ignored_options_logged(self) -> None:
        """Autobahn's TCP_NODELAY follows ``nodelay``; keys with no meaning here are logged once, by name."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        stack = self.build("nodelay = false\nacceptors = 16\nactive_n = 100\n")
        self.assertFalse(stack.wrappedFactory.tcpNoDelay)
        logged = [e for e in events if "accepted and ignored" in e.get("log_format", "")]
        self.assertEqual(len(logged), 1, events)
        self.assertEqual(logged[0]["keys"], "acceptors, active_n")
        self.assertEqual(logged[0]["listener"], "ws.s")
