"""Tests for ocppgw.api.manage_gateway: /gateways and /gateways/ocpp (contract B.1), handler level."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.api import manage_gateway
from ocppgw.api.http import ApiError
from ocppgw.api.overrides import read_overrides
from ocppgw.config import load_config
from tests.test_api_manage_listeners import call, make_context


class GatewayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.context = make_context(self)
        self.routes = manage_gateway.routes(self.context)

    def test_list(self) -> None:
        """GET /gateways lists our gateway with its listeners, limits and node."""
        (gateway,) = call(self.routes, "GET", "/gateways").body
        self.assertEqual((gateway["name"], gateway["status"]), ("ocpp", "running"))
        self.assertEqual((gateway["max_connections"], gateway["current_connections"]), (10, 0))
        self.assertEqual(
            gateway["listeners"],
            [{"id": "ocpp:ws:default", "type": "ws", "name": "default", "running": True}],
        )
        self.assertEqual(gateway["node_status"][0]["node"], "n1")
        self.assertRegex(gateway["created_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")
        self.assertEqual(call(self.routes, "GET", "/gateways", status="stopped").body, [])
        e = self.assertRaises(ApiError, call, self.routes, "GET", "/gateways", status="sleeping")
        self.assertEqual(e.message, "Unknown gateway status in query: sleeping")

    def test_get_defaults(self) -> None:
        """GET /gateways/ocpp is the config with defaults filled, in the reference's keys."""
        body = call(self.routes, "GET", "/gateways/ocpp").body
        self.assertEqual(body["mountpoint"], "ocpp/")
        self.assertEqual(body["idle_timeout"], "30s")
        self.assertEqual(body["upstream"]["reply_topic"], "cp/${cid}/Reply")
        self.assertEqual(body["dnstream"]["max_mqueue_len"], 100)
        self.assertEqual(body["listeners"][0]["id"], "ocpp:ws:default")
        self.assertNotIn("authentication", body)

    def test_put_round_trip_persists_and_reconfigures(self) -> None:
        """A GET result sent back with a new mountpoint is saved, survives a reload, and the router
        uses it for the next charge point."""
        body = call(self.routes, "GET", "/gateways/ocpp").body
        body["mountpoint"] = "api/"
        body["upstream"] = {"topic": "up/${cid}"}
        response = call(self.routes, "PUT", "/gateways/ocpp", body)
        self.assertEqual(response.status, 204)
        self.assertEqual(read_overrides(self.context.data_dir)["gateway"]["mountpoint"], "api/")
        reloaded = load_config(self.context.service.config.source)
        self.assertEqual(reloaded.gateway.mountpoint, "api/")
        self.assertEqual(reloaded.upstream.topic, "up/${cid}")
        self.assertEqual(reloaded.upstream.reply_topic, "cp/${cid}/Reply")  # the whole upstream replaced
        self.assertEqual(self.context.service.router._mountpoint, "api/")

    def test_put_restart_header(self) -> None:
        """A key only a restart applies is named in X-Restart-Required."""
        response = call(self.routes, "PUT", "/gateways/ocpp", {"idle_timeout": "10s"})
        self.assertEqual(response.headers, {"X-Restart-Required": "idle_timeout"})

    def test_put_invalid(self) -> None:
        """Wrong values and unknown fields are 400 and nothing is saved."""
        e = self.assertRaises(ApiError, call, self.routes, "PUT", "/gateways/ocpp", {"idle_timeout": "soon"})
        self.assertTrue(e.message.startswith("Invalid configurations: [gateway] idle_timeout:"), e.message)
        e = self.assertRaises(ApiError, call, self.routes, "PUT", "/gateways/ocpp", {"colour": 1})
        self.assertEqual(e.message, "gateway: unknown field 'colour'")
        self.assertEqual(read_overrides(self.context.data_dir), {})

    def test_enable_false_true(self) -> None:
        """enable/false stops every listener (stopped status), enable/true listens again."""
        service = self.context.service
        self.assertEqual(call(self.routes, "PUT", "/gateways/ocpp/enable/false").status, 204)
        self.assertIsNone(service.listener("ws.default").port)
        body = call(self.routes, "GET", "/gateways/ocpp").body
        self.assertEqual((body["status"], body["enable"]), ("stopped", False))
        self.assertIn("stopped_at", body)
        self.assertEqual(call(self.routes, "PUT", "/gateways/ocpp/enable/true").status, 204)
        self.assertIsNotNone(service.listener("ws.default").port)
        e = self.assertRaises(ApiError, call, self.routes, "PUT", "/gateways/ocpp/enable/maybe")
        self.assertEqual(e.status, 400)
