"""Tests for ocppgw.api.manage_listeners: listener objects (contract B.2), handler level."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.api import manage_listeners
from ocppgw.api.http import ApiError, ApiRequest, ApiResponse, Route
from ocppgw.api.overrides import read_overrides
from ocppgw.config import GatewayConfig, load_config
from ocppgw.service import GatewayService
from tests.fakes import FakeMqttLink
from tests.support import ThreadedMemoryReactorClock

INI = """[gateway]
node_name = n1

[listeners.ws.default]
bind = 127.0.0.1:33033
max_connections = 10
"""


@dataclass
class Context:
    """What ocppgw.api.context.ApiContext carries, for handler tests."""

    service: Any
    config: GatewayConfig
    router: Any
    metrics: Any
    clock: Any
    data_dir: Path
    directory: Any = None


def make_context(case: SynchronousTestCase, ini: str = INI) -> Context:
    """A started GatewayService on a memory reactor, over gw.ini ``ini`` in a temporary directory."""
    root = Path(case.mktemp()).absolute()
    root.mkdir()
    (root / "gw.ini").write_text(ini)
    config = load_config(root / "gw.ini")
    reactor = ThreadedMemoryReactorClock()
    service = GatewayService(config, reactor, link=FakeMqttLink())
    service.startService()
    case.addCleanup(service.stopService)
    return Context(
        service, config, service.router, service.metrics, reactor, config.gateway.data_dir, service.directory
    )


def call(routes: list[Route], method: str, path: str, body: Any = None, **query: str) -> ApiResponse:
    """Find the route for ``method path`` and call it synchronously, as the server would."""
    for route in routes:
        params = _match(route.pattern, path)
        if route.method == method and params is not None:
            request = ApiRequest(method, path, params, {k: [v] for k, v in query.items()}, body)
            result = route.handler(request)
            if isinstance(result, Deferred):
                box: list[Any] = []
                result.addBoth(box.append)
                (outcome,) = box
                if isinstance(outcome, Exception) or hasattr(outcome, "raiseException"):
                    outcome.raiseException()
                return outcome  # type: ignore[no-any-return]
            return result
    raise AssertionError(f"no route for {method} {path}")


def _match(pattern: str, path: str) -> dict[str, str] | None:
    parts, given = pattern.split("/"), path.split("/")
    if len(parts) != len(given):
        return None
    params = {}
    for part, value in zip(parts, given, strict=True):
        if part.startswith("{"):
            params[part[1:-1]] = value
        elif part != value:
            return None
    return params


BASE = "/gateways/ocpp/listeners"


class ListenerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.context = make_context(self)
        self.routes = manage_listeners.routes(self.context)

    def test_list_shape(self) -> None:
        """The list holds the listener in the reference's shape with status and node_status."""
        (item,) = call(self.routes, "GET", BASE).body
        self.assertEqual((item["id"], item["type"], item["name"]), ("ocpp:ws:default", "ws", "default"))
        self.assertEqual(item["bind"], "127.0.0.1:33033")
        self.assertEqual(item["websocket"]["path"], "/ocpp")
        self.assertEqual(item["max_conn_rate"], 1000)
        self.assertEqual(item["status"], {"running": True, "max_connections": 10, "current_connections": 0})
        self.assertEqual(item["node_status"][0]["node"], "n1")

    def test_get_unknown(self) -> None:
        """A malformed id is 404 'Listener not found: <id>', an unknown one 404 too."""
        e = self.assertRaises(ApiError, call, self.routes, "GET", BASE + "/nonsense")
        self.assertEqual((e.status, e.message), (404, "Listener not found: nonsense"))
        e = self.assertRaises(ApiError, call, self.routes, "GET", BASE + "/ocpp:ws:other")
        self.assertEqual(e.status, 404)

    def test_post_starts_and_persists(self) -> None:
        """POST adds a listener that listens at once and is saved in overrides.json."""
        body = {"type": "ws", "name": "extra", "bind": "127.0.0.1:33034", "websocket": {"path": "/x"}}
        response = call(self.routes, "POST", BASE, body)
        self.assertEqual(response.status, 201)
        self.assertEqual(response.body["id"], "ocpp:ws:extra")
        ports = [port for port, *_ in self.context.clock.tcpServers]
        self.assertIn(33034, ports)
        saved = read_overrides(self.context.data_dir)["listeners.ws.extra"]
        self.assertEqual((saved["bind"], saved["path"]), ("127.0.0.1:33034", "/x"))
        self.assertEqual(call(self.routes, "GET", BASE + "/ocpp:ws:extra").body["running"], True)

    def test_post_errors(self) -> None:
        """Missing keys, an occupied name, unknown fields and bad values are 400 with a message."""
        e = self.assertRaises(ApiError, call, self.routes, "POST", BASE, {"type": "ws", "name": "x"})
        self.assertEqual((e.status, e.message), (400, "bind is required"))
        taken = {"type": "ws", "name": "default", "bind": "1"}
        e = self.assertRaises(ApiError, call, self.routes, "POST", BASE, taken)
        self.assertIn("listener_name_occupied", e.message)
        unknown = {"type": "ws", "name": "y", "bind": "1", "colour": "red"}
        e = self.assertRaises(ApiError, call, self.routes, "POST", BASE, unknown)
        self.assertEqual(e.message, "listener: unknown field 'colour'")
        bad = {"type": "ws", "name": "y", "bind": "nowhere:port"}
        e = self.assertRaises(ApiError, call, self.routes, "POST", BASE, bad)
        self.assertTrue(e.message.startswith("Invalid configurations: [listeners.ws.y] bind:"), e.message)
        self.assertNotIn("listeners.ws.y", read_overrides(self.context.data_dir))

    def test_put_rebinds_only_that_listener(self) -> None:
        """PUT with a new bind stops the old port and listens on the new one; GET output round-trips."""
        call(self.routes, "POST", BASE, {"type": "ws", "name": "other", "bind": "127.0.0.1:33040"})
        current = call(self.routes, "GET", BASE + "/ocpp:ws:default").body
        current["bind"] = "127.0.0.1:33035"
        response = call(self.routes, "PUT", BASE + "/ocpp:ws:default", current)
        self.assertEqual((response.status, response.body["bind"]), (200, "127.0.0.1:33035"))
        self.assertEqual(response.body["max_connections"], 10)
        service = self.context.service
        self.assertEqual(service.listener("ws.default").port.getHost().port, 33035)
        self.assertEqual(service.listener("ws.other").port.getHost().port, 33040)

    def test_put_unknown_is_400(self) -> None:
        """PUT of an unknown listener is 400 'Listener ocpp:ws:x not found', as the reference."""
        e = self.assertRaises(ApiError, call, self.routes, "PUT", BASE + "/ocpp:ws:x", {"bind": "1"})
        self.assertEqual((e.status, e.message), (400, "Listener ocpp:ws:x not found"))

    def test_delete_persists(self) -> None:
        """DELETE stops the listener and the deletion is saved, so gw.ini's listener stays deleted; the
        last listener cannot go (gw.ini would not load)."""
        e = self.assertRaises(ApiError, call, self.routes, "DELETE", BASE + "/ocpp:ws:default")
        self.assertIn("no listener configured", e.message)
        call(self.routes, "POST", BASE, {"type": "ws", "name": "other", "bind": "127.0.0.1:33040"})
        self.assertEqual(call(self.routes, "DELETE", BASE + "/ocpp:ws:default").status, 204)
        self.assertIsNone(self.context.service.listener("ws.default"))
        self.assertEqual(read_overrides(self.context.data_dir)["listeners.ws.default"], None)
        self.assertRaises(ApiError, call, self.routes, "DELETE", BASE + "/ocpp:ws:default")

    def test_bind_failure_rolls_back(self) -> None:
        """A PUT whose new port cannot be had is 400 'Invalid bind address'; the old listener listens
        again on its old port and nothing is saved."""
        from twisted.internet.error import CannotListenError

        reactor = self.context.clock
        listen = reactor.listenTCP

        def refuse_33099(port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
            if port == 33099:
                raise CannotListenError(interface, port, OSError(98, "Address already in use"))
            return listen(port, factory, backlog=backlog, interface=interface)

        reactor.listenTCP = refuse_33099
        e = self.assertRaises(
            ApiError, call, self.routes, "PUT", BASE + "/ocpp:ws:default", {"bind": "127.0.0.1:33099"}
        )
        self.assertEqual(e.status, 400)
        self.assertTrue(e.message.startswith("Invalid bind address: bind: cannot listen on"), e.message)
        self.assertEqual(self.context.service.listener("ws.default").port.getHost().port, 33033)
        self.assertEqual(read_overrides(self.context.data_dir), {})
