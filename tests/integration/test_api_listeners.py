"""A listener added through the API handlers at run time: a real charge point connects through it,
its Calls reach the broker, and deleting the listener closes it with 1001."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from ocppgw.api import manage_gateway, manage_listeners
from ocppgw.config import load_config
from tests.integration.harness import GatewayHarness
from tests.support import free_port, poll_until
from tests.test_api_manage_listeners import Context

BASE = "/gateways/ocpp/listeners"


class RuntimeListenerTests(TestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        self.gw = GatewayHarness(self)
        yield self.gw.start()
        service = self.gw.service
        root = Path(self.mktemp()).absolute()
        root.mkdir()
        (root / "gw.ini").write_text(self.gw.config_text)
        service.config = load_config(root / "gw.ini")  # the API re-reads the file it came from
        self.context = Context(
            service, service.config, service.router, service.metrics, reactor, service.config.gateway.data_dir
        )

    def handle(self, routes: Any, method: str, pattern: str, path: str, body: Any = None) -> Any:
        from ocppgw.api.http import ApiRequest

        (route,) = [r for r in routes if r.method == method and r.pattern == pattern]
        params = {"id": path.rsplit("/", 1)[1]} if "{id}" in pattern else {}
        params |= {"enable": path.rsplit("/", 1)[1]} if "{enable}" in pattern else {}
        return route.handler(ApiRequest(method, path, params, {}, body))

    @inlineCallbacks
    def test_added_then_deleted(self) -> Any:
        """POST starts a listener a charge point boots through; DELETE closes it with 1001."""
        routes = manage_listeners.routes(self.context)
        port = free_port()
        body = {"type": "ws", "name": "extra", "bind": f"127.0.0.1:{port}", "websocket": {"path": "/x"}}
        response = yield self.handle(routes, "POST", BASE, BASE, body)
        self.assertEqual(response.status, 201)
        client = yield self.gw.connect("CPX", url=f"ws://127.0.0.1:{port}/x/CPX")
        result = yield self.gw.boot(client, "CPX")
        self.assertEqual(result.status, "Accepted")
        response = yield self.handle(routes, "DELETE", BASE + "/{id}", BASE + "/ocpp:ws:extra")
        self.assertEqual(response.status, 204)
        code, reason = yield client.wait_closed()
        self.assertEqual((code, reason), (1001, "listener removed"))
        yield poll_until(lambda: self.gw.service.router.session("CPX") is None, timeout=10)

    @inlineCallbacks
    def test_disable_closes_with_1001(self) -> Any:
        """enable/false closes connected charge points with 1001 'gateway disabled'; true lets them in."""
        routes = manage_gateway.routes(self.context)
        client = yield self.gw.connect("CPD")
        pattern = "/gateways/ocpp/enable/{enable}"
        yield self.handle(routes, "PUT", pattern, "/gateways/ocpp/enable/false")
        code, reason = yield client.wait_closed()
        self.assertEqual((code, reason), (1001, "gateway disabled"))
        yield self.handle(routes, "PUT", pattern, "/gateways/ocpp/enable/true")
        again = yield self.gw.connect("CPD")
        self.assertIsNotNone(again)
