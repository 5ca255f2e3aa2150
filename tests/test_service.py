"""``GatewayService``: its children, binding before privileges are dropped, and the stop order."""

from __future__ import annotations

import json
from typing import Any

import zope.interface
from twisted.application.service import IServiceCollection
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ocppgw.auth.service import AuthenticatorService
from ocppgw.config import config_from_string
from ocppgw.core.ports import IBrokerLink
from ocppgw.mqtt.service import LinkService
from ocppgw.runtime import RuntimeService
from ocppgw.service import GatewayService, StartupError
from ocppgw.ws.limits import ListenerLimits
from ocppgw.ws.proxy import ProxyProtocolFactory
from ocppgw.ws.server import OcppServerFactory
from ocppgw.ws.service import ListenerService
from tests.test_plugin import TWO_LISTENERS


@zope.interface.implementer(IBrokerLink)
class FakeLink:
    """An ``IBrokerLink`` that records what the gateway asks of it."""

    def __init__(self) -> None:
        self.connected = False
        self.started = False
        self.stopped_with: float | None = None
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.subscriptions: dict[str, Any] = {}
        self.observers: list[Any] = []
        self.room_observers: list[Any] = []

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float) -> Deferred[None]:
        self.stopped_with = timeout
        return succeed(None)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        self.published.append((topic, payload, qos, retain))
        return True

    def subscribe(self, topic_filter: str, qos: int, handler: Any) -> None:
        self.subscriptions[topic_filter] = handler

    def unsubscribe(self, topic_filter: str) -> None:
        self.subscriptions.pop(topic_filter, None)

    def add_connection_observer(self, observer: Any) -> None:
        self.observers.append(observer)

    def room(self) -> int:
        return 1000

    def add_room_observer(self, observer: Any) -> None:
        self.room_observers.append(observer)

    def reload_tls(self) -> list[tuple[str, str]]:
        return []


class RefusingReactor(MemoryReactorClock):
    """A memory reactor on which every listenTCP fails as if the port were taken."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


class _Port:
    def __init__(self) -> None:
        self.stopped = False

    def stopListening(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)


class PartlyRefusingReactor(MemoryReactorClock):
    """The first listenTCP succeeds, every later one fails as if the port were taken."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[_Port] = []

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        if self.ports:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        self.ports.append(_Port())
        return self.ports[0]


class GatewayServiceTests(SynchronousTestCase):
    """One child service per piece of I/O, bound in privilegedStartService, stopped in order."""

    def setUp(self) -> None:
        self.config = config_from_string(TWO_LISTENERS, source="gw.ini")
        self.reactor = MemoryReactorClock()
        self.link = FakeLink()
        self.service = GatewayService(self.config, self.reactor, link=self.link)

    def test_fake_link_is_a_link(self) -> None:
        """The fake used here provides ``IBrokerLink``, so the wiring is tested against the real interface."""
        self.assertTrue(verifyObject(IBrokerLink, self.link))

    def test_children_in_dependency_order(self) -> None:
        """The children are the MQTT link first, the runtime monitor, the authenticator, then one
        service per listener."""
        children = list(IServiceCollection(self.service))
        self.assertEqual(
            [child.name for child in children], ["mqtt", "runtime", "authentication", "ws.a", "ws.b"]
        )
        self.assertIsInstance(children[0], LinkService)
        self.assertIs(children[0].link, self.link)
        self.assertIsInstance(children[1], RuntimeService)
        self.assertIsNone(children[1].gc)  # only twistd's gateway tunes the process's collector
        self.assertIsInstance(children[2], AuthenticatorService)
        self.assertEqual([type(child) for child in children[3:]], [ListenerService, ListenerService])

    def test_api_child_after_the_listeners(self) -> None:
        """With [api] enable (the default), the API is the last child and binds with the listeners."""
        config = config_from_string(TWO_LISTENERS.replace("enable = false", "bind = 127.0.0.1:18099"))
        reactor = MemoryReactorClock()
        service = GatewayService(config, reactor, link=self.link)
        self.assertEqual([child.name for child in service][-3:], ["ws.a", "ws.b", "api"])
        service.privilegedStartService()
        self.assertEqual([(port, host) for port, _, _, host in reactor.tcpServers][-1], (18099, "127.0.0.1"))

    def test_one_stack_per_listener(self) -> None:
        """Every listener gets its own stack, limits outermost, sharing the one router."""
        for service, listener in zip(self.service.listeners, self.config.listeners, strict=True):
            self.assertIs(service.listener, listener)
            self.assertIsInstance(service.factory, ListenerLimits)
            websocket = service.factory.wrappedFactory
            self.assertIsInstance(websocket, OcppServerFactory)
            self.assertIs(websocket.listener, listener)
            self.assertIs(websocket.router, self.service.router)
            self.assertIs(websocket.reactor, self.reactor)

    def test_proxy_layer_under_limits(self) -> None:
        """With ``proxy_protocol`` the PROXY layer is built between the limits and the WebSocket."""
        config = config_from_string(TWO_LISTENERS + "proxy_protocol = true\n", source="gw.ini")
        service = GatewayService(config, self.reactor, link=self.link)
        plain, proxied = (child.factory.wrappedFactory for child in service.listeners)
        self.assertIsInstance(plain, OcppServerFactory)
        self.assertIsInstance(proxied, ProxyProtocolFactory)
        self.assertIsInstance(proxied.wrappedFactory, OcppServerFactory)

    def test_privileged_start_binds_listeners(self) -> None:
        """privilegedStartService listens on each listener's host and port with its stack."""
        self.service.privilegedStartService()
        bound = [(port, factory, interface) for port, factory, _backlog, interface in self.reactor.tcpServers]
        a, b = (child.factory for child in self.service.listeners)
        self.assertEqual(bound, [(0, a, "127.0.0.1"), (33099, b, "0.0.0.0")])
        self.assertTrue(all(child.port is not None for child in self.service.listeners))
        self.assertFalse(self.link.started)

    def test_listen_backlog(self) -> None:
        """Each listener, IPv4 or IPv6, listens with its own ``backlog`` (default 1024), not Twisted's 50."""
        text = TWO_LISTENERS.replace("path = /cp", "backlog = 200")
        config = config_from_string(text + "[listeners.ws.c]\nbind = [::1]:0\nbacklog = 7\n")
        reactor = MemoryReactorClock()
        GatewayService(config, reactor, link=self.link).privilegedStartService()
        bound = [(port, backlog, interface) for port, _factory, backlog, interface in reactor.tcpServers]
        self.assertEqual(bound, [(0, 1024, "127.0.0.1"), (33099, 200, "0.0.0.0"), (0, 7, "::1")])

    def test_start_and_stop(self) -> None:
        """startService binds and starts the link; stopService stops listening, marks the node
        offline, and stops the link with ``shutdown_timeout``."""
        self.service.startService()
        self.assertTrue(self.link.started)
        self.assertEqual(len(self.reactor.tcpServers), 2)
        self.assertEqual(len(self.link.observers), 2)  # the router's and the cluster's
        self.successResultOf(self.service.stopService())
        self.assertEqual([child.port for child in self.service.listeners], [None, None])
        self.assertEqual(self.link.stopped_with, 7.0)
        topic, payload, _qos, retain = self.link.published[-1]
        self.assertEqual(topic, "ocpp/gateway/testnode/Presence")
        self.assertEqual(
            json.loads(payload),
            {"node": "testnode", "member": "testnode", "status": "offline", "reason": "shutdown"},
        )
        self.assertTrue(retain)

    def test_stop_order(self) -> None:
        """Charge points are closed only once the listeners have stopped, and the link is stopped only
        after the node is offline, however long a port takes to close."""
        events: list[str] = []
        slow = Deferred[None]()
        self.service.startService()
        first = self.service.listeners[0]
        self.patch(first.port, "stopListening", lambda: events.append("stop listening") or slow)
        self.patch(self.service.router, "shutdown", lambda: events.append("router shutdown"))
        self.patch(self.link, "stop", lambda t: events.append(f"link stop {t:g}") or succeed(None))
        stopped = self.service.stopService()
        self.assertEqual(events, ["stop listening"])
        self.assertNoResult(stopped)
        slow.callback(None)
        self.assertEqual(events, ["stop listening", "router shutdown", "link stop 7"])
        self.successResultOf(stopped)

    def test_bind_failure(self) -> None:
        """A listener that cannot bind stops start-up with one ``[listeners.ws.<name>] bind:`` line each,
        as an ordinary exception (which daemonised twistd reports and cleans up after)."""
        service = GatewayService(self.config, RefusingReactor(), link=self.link)
        with self.assertRaises(StartupError) as raised:
            service.privilegedStartService()
        self.assertNotIsInstance(raised.exception, SystemExit)
        lines = raised.exception.problems
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith("gw.ini: [listeners.ws.a] bind: cannot listen on 127.0.0.1:0"))
        self.assertTrue(lines[1].startswith("gw.ini: [listeners.ws.b] bind: cannot listen on 0.0.0.0:33099"))
        self.assertIn("Address already in use", lines[0])
        self.assertTrue(
            str(raised.exception).startswith("[listeners.ws.a] bind: cannot listen on 127.0.0.1:0"),
            "the text a daemon's parent prints leads with section and key",
        )
        self.assertTrue(str(raised.exception).endswith(" (and 1 more)"))
        self.assertFalse(self.link.started)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_bind_failure_releases_bound_ports(self) -> None:
        """When one listener cannot bind, the ports already bound are released."""
        reactor = PartlyRefusingReactor()
        service = GatewayService(self.config, reactor, link=self.link)
        self.assertRaises(StartupError, service.privilegedStartService)
        (port,) = reactor.ports
        self.assertTrue(port.stopped)


class DisabledAtStartTests(SynchronousTestCase):
    """``[gateway] enable = false`` (what the API's enable switch saves): the gateway starts with no
    listener bound, and enabling it binds them."""

    def test_starts_without_listening_then_enables(self) -> None:
        """Nothing listens while disabled; set_enabled(True) binds every listener."""
        config = config_from_string(TWO_LISTENERS.replace("[gateway]\n", "[gateway]\nenable = false\n"))
        reactor = MemoryReactorClock()
        service = GatewayService(config, reactor, link=FakeLink())
        service.startService()
        self.assertEqual(reactor.tcpServers, [])
        self.assertFalse(service.enabled)
        self.successResultOf(service.set_enabled(True))
        self.assertEqual([port for port, *_ in reactor.tcpServers], [0, 33099])
        self.successResultOf(service.stopService())
