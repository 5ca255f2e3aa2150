"""The twistd plugin and ``ocppgw.tap``: Options and makeService."""

from __future__ import annotations

import ast
import io
import sys
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from ocppgw import tap
from ocppgw.config import GatewayConfig, config_from_string
from ocppgw.logtext import classic_line
from ocppgw.mqtt.reactor_loop import PahoReactorLink
from ocppgw.mqtt.thread_loop import PahoThreadLink
from ocppgw.service import GatewayService

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_FILE = ROOT / "twisted" / "plugins" / "ocppgw_plugin.py"

TWO_LISTENERS = """\
[gateway]
node_name = testnode
shutdown_timeout = 7s

[api]
enable = false

[listeners.ws.a]
bind = 127.0.0.1:0

[listeners.ws.b]
bind = 33099
path = /cp
mountpoint = site-b/
"""


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

    def options(self) -> tap.Options:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TWO_LISTENERS, encoding="utf-8")
        options = tap.Options()
        options.parseOptions(["--config", str(path)])
        return options

    def test_make_service(self) -> None:
        """The service has the parsed config, the given reactor and a (not yet started) paho link."""
        options = self.options()
        reactor = MemoryReactorClock()
        service = tap.makeService(options, reactor=reactor)
        self.assertIsInstance(service, GatewayService)
        self.assertIs(service.config, options.gateway_config)
        self.assertIs(service.reactor, reactor)
        self.assertIsInstance(service.link, PahoReactorLink)
        self.assertEqual(reactor.tcpServers, [])
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_log_observer_under_twistd(self) -> None:
        """Under twistd (options with a parent: twistd's own) the service offers ``ocppgw.logtext``'s
        observer to twistd's application; outside twistd none."""
        options = self.options()
        self.assertIsNone(tap.makeService(options, reactor=MemoryReactorClock()).log_observer)
        options.parent = {"nodaemon": True, "logfile": None}
        service = tap.makeService(options, reactor=MemoryReactorClock())
        self.assertIs(service.log_observer.formatEvent, classic_line)

    def test_thread_network_loop(self) -> None:
        """``[mqtt] network_loop = thread`` gives the link whose paho loop runs in its own thread."""
        config = config_from_string(TWO_LISTENERS + "\n[mqtt]\nnetwork_loop = thread\n", source="gw.ini")
        service = GatewayService(config, MemoryReactorClock())
        self.assertIsInstance(service.link, PahoThreadLink)


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )
