"""The twistd plugin, ``ocppgw.tap`` (Options and makeService) and how ``GatewayService`` wires listeners."""

from __future__ import annotations

import ast
import io
import json
import sys
from pathlib import Path
from typing import Any

import zope.interface
from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ocppgw import tap
from ocppgw.config import GatewayConfig, config_from_string
from ocppgw.core.ports import IBrokerLink
from ocppgw.mqtt.link import PahoThreadLink
from ocppgw.mqtt.reactor_link import PahoReactorLink
from ocppgw.service import GatewayService
from ocppgw.ws.server import OcppServerFactory

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_FILE = ROOT / "twisted" / "plugins" / "ocppgw_plugin.py"

TWO_LISTENERS = """\
[gateway]
node_name = testnode
shutdown_timeout = 7s

[listeners.ws.a]
bind = 127.0.0.1:0

[listeners.ws.b]
bind = 33099
path = /cp
mountpoint = site-b/
"""


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

    def reload_tls(self) -> list[str]:
        return []


class RefusingReactor(MemoryReactorClock):
    """A memory reactor on which every listenTCP fails as if the port were taken."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        raise CannotListenError(interface, port, OSError(98, "Address already in use"))


class PluginTests(SynchronousTestCase):
    """twistd finds the ``ocppgw`` subcommand through a plugin file that only names ``ocppgw.tap``."""

    def test_plugin_found(self) -> None:
        """getPlugins(IServiceMaker) yields exactly one ``ocppgw`` maker, whose module is ``ocppgw.tap``."""
        makers = [maker for maker in getPlugins(IServiceMaker) if maker.tapname == "ocppgw"]
        self.assertEqual(len(makers), 1)
        self.assertEqual(makers[0].module, "ocppgw.tap")
        self.assertTrue(makers[0].description)

    def test_plugin_file_is_one_statement(self) -> None:
        """The plugin file is an import and one ServiceMaker(...) assignment, so twistd --help stays cheap."""
        tree = ast.parse(PLUGIN_FILE.read_text(encoding="utf-8"))
        body = [node for node in tree.body if not _is_docstring(node)]
        self.assertEqual(len(body), 2, ast.dump(tree))
        imported, assigned = body
        self.assertIsInstance(imported, ast.ImportFrom)
        assert isinstance(imported, ast.ImportFrom)
        self.assertEqual(imported.module, "twisted.application.service")
        self.assertEqual([alias.name for alias in imported.names], ["ServiceMaker"])
        self.assertIsInstance(assigned, ast.Assign)
        assert isinstance(assigned, ast.Assign)
        call = assigned.value
        self.assertIsInstance(call, ast.Call)
        assert isinstance(call, ast.Call)
        self.assertEqual(ast.unparse(call.func), "ServiceMaker")
        arguments = [ast.literal_eval(argument) for argument in call.args]
        self.assertEqual(arguments[1], "ocppgw.tap")
        self.assertEqual(arguments[3], "ocppgw")

    def test_no_package_init_in_twisted_plugins(self) -> None:
        """Neither ``twisted/`` nor ``twisted/plugins/`` has an ``__init__.py``: it would shadow Twisted."""
        self.assertFalse((ROOT / "twisted" / "__init__.py").exists())
        self.assertFalse((ROOT / "twisted" / "plugins" / "__init__.py").exists())
        self.assertTrue(PLUGIN_FILE.is_file())


class OptionsTests(SynchronousTestCase):
    """``ocppgw.tap.Options`` reads the config once and stops on a bad file with one line per problem."""

    def setUp(self) -> None:
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def write(self, text: str) -> str:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return str(path)

    def test_bad_file_one_line_per_problem(self) -> None:
        """Each problem is one stderr line, ``<path>: [section] key: reason``, then SystemExit(1)."""
        path = self.write(
            "[gateway]\nbogus = 1\n\n[mqtt]\nport = 99999\n\n[listeners.ws.default]\nbind = 33033\n"
        )
        with self.assertRaises(SystemExit) as raised:
            tap.Options().parseOptions(["--config", path])
        self.assertEqual(raised.exception.code, 1)
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith(f"{path}: [gateway] bogus: "), lines[0])
        self.assertTrue(lines[1].startswith(f"{path}: [mqtt] port: "), lines[1])
        self.assertNotIn("Traceback", self.stderr.getvalue())

    def test_missing_listener(self) -> None:
        """A file without a listener section is refused with the placeholder section name."""
        path = self.write("[gateway]\nmountpoint = ocpp/\n")
        with self.assertRaises(SystemExit):
            tap.Options().parseOptions(["--config", path])
        self.assertEqual(self.stderr.getvalue(), f"{path}: [listeners.ws.<name>]: no listener configured\n")

    def test_unreadable_file(self) -> None:
        """A config path that does not exist is one line naming the file, not a traceback."""
        path = self.mktemp()
        with self.assertRaises(SystemExit):
            tap.Options().parseOptions(["--config", path])
        lines = self.stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith(f"{path}: cannot read"), lines[0])

    def test_config_required(self) -> None:
        """Without --config, twistd gets a usage error."""
        self.assertRaises(usage.UsageError, tap.Options().parseOptions, [])

    def test_good_file(self) -> None:
        """A listener-only file parses into ``gateway_config``; with checking off no schemas are loaded."""
        path = self.write("[listeners.ws.default]\nbind = 33033\n")
        options = tap.Options()
        options.parseOptions(["--config", path])
        config = options.gateway_config
        self.assertIsInstance(config, GatewayConfig)
        self.assertEqual(config.source, path)
        self.assertEqual(
            [(item.name, item.port, item.path) for item in config.listeners], [("default", 33033, "/ocpp")]
        )
        self.assertIsNone(options.schemas)
        self.assertEqual(self.stderr.getvalue(), "")

    def test_schemas_loaded_when_checking(self) -> None:
        """With message_format_checking on, the shipped schemas are compiled once, in Options."""
        path = self.write(
            "[gateway]\nmessage_format_checking = all\n\n[listeners.ws.default]\nbind = 33033\n"
        )
        options = tap.Options()
        options.parseOptions(["--config", path])
        self.assertIsNotNone(options.schemas)
        self.assertTrue(options.schemas.has("BootNotification", "Request"))
        self.assertTrue(options.schemas.has("SignCertificate", "Response"))

    def test_example_config_is_valid(self) -> None:
        """``examples/gw.ini``, which README's walk-through runs, is accepted as it is."""
        options = tap.Options()
        options.parseOptions(["--config", str(ROOT / "examples" / "gw.ini")])
        self.assertEqual([item.port for item in options.gateway_config.listeners], [33033])


class MakeServiceTests(SynchronousTestCase):
    """``makeService`` builds a ``GatewayService`` on the reactor it is given, and nothing more."""

    def test_make_service(self) -> None:
        """The service has the parsed config, the given reactor and a (not yet started) paho link."""
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TWO_LISTENERS, encoding="utf-8")
        options = tap.Options()
        options.parseOptions(["--config", str(path)])
        reactor = MemoryReactorClock()
        service = tap.makeService(options, reactor=reactor)
        self.assertIsInstance(service, GatewayService)
        self.assertIs(service.config, options.gateway_config)
        self.assertIs(service.reactor, reactor)
        self.assertIsInstance(service.link, PahoReactorLink)
        self.assertEqual(reactor.tcpServers, [])
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_thread_network_loop(self) -> None:
        """``[mqtt] network_loop = thread`` gives the link whose paho loop runs in its own thread."""
        config = config_from_string(TWO_LISTENERS + "\n[mqtt]\nnetwork_loop = thread\n", source="gw.ini")
        service = GatewayService(config, MemoryReactorClock())
        self.assertIsInstance(service.link, PahoThreadLink)


class GatewayServiceWiringTests(SynchronousTestCase):
    """``GatewayService`` binds one factory per listener and stops in order."""

    def setUp(self) -> None:
        self.config = config_from_string(TWO_LISTENERS, source="gw.ini")
        self.reactor = MemoryReactorClock()
        self.link = FakeLink()
        self.service = GatewayService(self.config, self.reactor, link=self.link)

    def test_fake_link_is_a_link(self) -> None:
        """The fake used here provides ``IBrokerLink``, so the wiring is tested against the real interface."""
        self.assertTrue(verifyObject(IBrokerLink, self.link))

    def test_one_factory_per_listener(self) -> None:
        """Every listener gets its own factory, sharing the one gateway."""
        self.assertEqual(list(self.service.factories), list(self.config.listeners))
        for listener, factory in self.service.factories.items():
            self.assertIsInstance(factory, OcppServerFactory)
            self.assertIs(factory.listener, listener)
            self.assertIs(factory.gateway, self.service.gateway)

    def test_privileged_start_binds_listeners(self) -> None:
        """privilegedStartService listens on each listener's host and port with its factory."""
        self.service.privilegedStartService()
        bound = [(port, factory, interface) for port, factory, _backlog, interface in self.reactor.tcpServers]
        factories = self.service.limits  # each listener's factory behind its limits
        a, b = self.config.listeners
        self.assertEqual(bound, [(0, factories[a], "127.0.0.1"), (33099, factories[b], "0.0.0.0")])
        self.assertEqual(sorted(self.service.ports), ["ws.a", "ws.b"])
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
        self.assertEqual(len(self.link.observers), 1)
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.service.ports, {})
        self.assertEqual(self.link.stopped_with, 7.0)
        topic, payload, _qos, retain = self.link.published[-1]
        self.assertEqual(topic, "ocpp/gateway/testnode/Presence")
        self.assertEqual(json.loads(payload), {"node": "testnode", "status": "offline"})
        self.assertTrue(retain)

    def test_bind_failure(self) -> None:
        """A listener that cannot bind stops start-up with one ``[listeners.ws.<name>] bind:`` line each."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        service = GatewayService(self.config, RefusingReactor(), link=self.link)
        with self.assertRaises(SystemExit) as raised:
            service.privilegedStartService()
        self.assertEqual(raised.exception.code, 1)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith("gw.ini: [listeners.ws.a] bind: cannot listen on 127.0.0.1:0"))
        self.assertTrue(lines[1].startswith("gw.ini: [listeners.ws.b] bind: cannot listen on 0.0.0.0:33099"))
        self.assertFalse(self.link.started)


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )
