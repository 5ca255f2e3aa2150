"""The management API through real HTTP (treq) against a running gateway: login, tokens, API keys,
roles, lockout, the first administrator, the client list with a real charge point, kick, metrics,
the OpenAPI document, security headers and error bodies."""

from __future__ import annotations

import base64
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from ocppgw.api.admins import AdminStore
from ocppgw.config import config_from_string
from ocppgw.service import GatewayService, StartupError
from tests.integration.harness import GatewayHarness


def _basic(key: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


class ApiTestCase(TestCase):
    """A gateway with the API on a free port, API keys ``ci`` (administrator) and ``ro`` (viewer)."""

    timeout = 60

    @inlineCallbacks
    def setUp(self) -> Any:
        self.data_dir = Path(tempfile.mkdtemp(prefix="ocppgw-api-"))
        keys = self.data_dir / "keys.txt"
        keys.write_text("# API keys\nci:s3cret\nro:r3ad:viewer\n", encoding="utf-8")
        self.gw = GatewayHarness(
            self,
            f"[gateway]\ndata_dir = {self.data_dir}\n[api]\nenable = true\nbind = 127.0.0.1:0\n"
            f"bootstrap_file = {keys}\nlogin_max_failures = 3\n",
        )
        yield self.gw.start()
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)  # runs before the gateway stops
        self.admin = _basic("ci", "s3cret")
        self.viewer = _basic("ro", "r3ad")

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: Any = None,
        data: bytes | None = None,
    ) -> Any:
        if body is not None:
            data = json.dumps(body).encode()
        return treq.request(method, self.gw.api_url + path, headers=headers or {}, data=data, pool=self.pool)

    @inlineCallbacks
    def answer(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: Any = None,
        data: bytes | None = None,
    ) -> Any:
        """(status, parsed JSON body or None, response)."""
        response = yield self.request(method, path, headers, body, data)
        content = yield response.content()
        parsed = (
            json.loads(content)
            if content and b"json" in (response.headers.getRawHeaders("content-type") or [b""])[0].encode()
            else None
        )
        return response.code, parsed, response

    @inlineCallbacks
    def login(self, username: str = "admin", password: str | None = None) -> Any:
        if password is None:
            password = (self.data_dir / "initial_admin_password").read_text().strip()
        status, body, _ = yield self.answer(
            "POST", "/api/v5/login", body={"username": username, "password": password}
        )
        self.assertEqual(status, 200, body)
        return {"Authorization": f"Bearer {body['token']}"}


class LoginTests(ApiTestCase):
    def test_initial_admin_password_file(self) -> None:
        """The first start creates admin with a random password in a 0600 file, which logs in."""
        path = self.data_dir / "initial_admin_password"
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual([a.username for a in AdminStore(self.data_dir).list()], ["admin"])
        self.assertGreaterEqual(len(path.read_text().strip()), 16)

    @inlineCallbacks
    def test_login_and_logout(self) -> Any:
        """Login answers the reference's shape; the token works until logout, then BAD_TOKEN."""
        password = (self.data_dir / "initial_admin_password").read_text().strip()
        status, body, _ = yield self.answer(
            "POST", "/api/v5/login", body={"username": "admin", "password": password}
        )
        self.assertEqual(status, 200)
        self.assertEqual(set(body), {"token", "role", "version", "license"})
        self.assertEqual((body["role"], body["license"]), ("administrator", {"edition": "opensource"}))
        bearer = {"Authorization": f"Bearer {body['token']}"}
        status, _, _ = yield self.answer("GET", "/api/v5/gateways/ocpp/clients", bearer)
        self.assertEqual(status, 200)
        status, _, _ = yield self.answer("POST", "/api/v5/logout", bearer, body={"username": "admin"})
        self.assertEqual(status, 204)
        status, body, response = yield self.answer("GET", "/api/v5/gateways/ocpp/clients", bearer)
        self.assertEqual((status, body["code"]), (401, "BAD_TOKEN"))
        self.assertTrue(response.headers.getRawHeaders("www-authenticate"))

    @inlineCallbacks
    def test_wrong_password_and_lockout(self) -> Any:
        """Wrong passwords are BAD_USERNAME_OR_PWD; the third in a minute locks the address out,
        even for the right password."""
        for _ in range(3):
            status, body, _ = yield self.answer(
                "POST", "/api/v5/login", body={"username": "admin", "password": "nope"}
            )
            self.assertEqual((status, body["code"]), (401, "BAD_USERNAME_OR_PWD"))
        password = (self.data_dir / "initial_admin_password").read_text().strip()
        status, body, _ = yield self.answer(
            "POST", "/api/v5/login", body={"username": "admin", "password": password}
        )
        self.assertEqual((status, body["code"]), (401, "LOGIN_LOCKED"))

    @inlineCallbacks
    def test_bad_login_bodies(self) -> Any:
        """Malformed JSON, a non-object, wrong types and unknown fields are 400 BAD_REQUEST."""
        for data in (
            b"{",
            b"[]",
            b'{"username": 1, "password": "x"}',
            b'{"username": "a", "password": "b", "x": 1}',
        ):
            status, body, _ = yield self.answer("POST", "/api/v5/login", data=data)
            self.assertEqual((status, body["code"]), (400, "BAD_REQUEST"), data)

    @inlineCallbacks
    def test_authorization_errors(self) -> Any:
        """No header, a bad scheme, a bad key or secret, an API key on /logout: the reference's 401 codes."""
        cases = [
            ({}, "AUTHORIZATION_HEADER_ERROR"),
            ({"Authorization": "Digest x"}, "AUTHORIZATION_HEADER_ERROR"),
            ({"Authorization": "Basic !!!"}, "AUTHORIZATION_HEADER_ERROR"),
            (_basic("ci", "wrong"), "BAD_API_KEY_OR_SECRET"),
            (_basic("nobody", "s3cret"), "BAD_API_KEY_OR_SECRET"),
            ({"Authorization": "Bearer nosuchtoken"}, "BAD_TOKEN"),
        ]
        for headers, code in cases:
            status, body, response = yield self.answer("GET", "/api/v5/gateways/ocpp/clients", headers)
            self.assertEqual((status, body["code"]), (401, code), headers)
            self.assertEqual(response.headers.getRawHeaders("www-authenticate"), ['Basic realm="ocppgw"'])
        status, body, _ = yield self.answer("POST", "/api/v5/logout", self.admin)
        self.assertEqual((status, body["code"]), (401, "API_KEY_NOT_ALLOW"))

    @inlineCallbacks
    def test_viewer_reads_only(self) -> Any:
        """A viewer API key may GET; anything else is 403 UNAUTHORIZED_ROLE."""
        status, _, _ = yield self.answer("GET", "/api/v5/gateways/ocpp/clients", self.viewer)
        self.assertEqual(status, 200)
        status, body, _ = yield self.answer("DELETE", "/api/v5/gateways/ocpp/clients/CP1", self.viewer)
        self.assertEqual((status, body["code"]), (403, "UNAUTHORIZED_ROLE"))

    @inlineCallbacks
    def test_viewer_administrator_account(self) -> Any:
        """An administrator added with role viewer logs in as a viewer and may not DELETE."""
        AdminStore(self.data_dir).add("watcher", "w4tch", "viewer")
        bearer = yield self.login("watcher", "w4tch")
        status, body, _ = yield self.answer("DELETE", "/api/v5/gateways/ocpp/clients/CP1", bearer)
        self.assertEqual((status, body["code"]), (403, "UNAUTHORIZED_ROLE"))
        status, _, _ = yield self.answer("POST", "/api/v5/logout", bearer)
        self.assertEqual(status, 204)


class ServerTests(ApiTestCase):
    @inlineCallbacks
    def test_security_headers_and_not_found(self) -> Any:
        """Every answer, an error too, has the security headers and no CORS; unknown paths are 404
        RESOURCE_NOT_FOUND, a known path with another method 405."""
        status, body, response = yield self.answer("GET", "/api/v5/nothing/here", self.admin)
        self.assertEqual((status, body["code"]), (404, "RESOURCE_NOT_FOUND"))
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("x-frame-options"), ["DENY"])
        self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        self.assertIn("default-src 'self'", headers.getRawHeaders("content-security-policy")[0])
        self.assertIsNone(headers.getRawHeaders("access-control-allow-origin"))
        status, body, _ = yield self.answer("PUT", "/api/v5/gateways/ocpp/clients", self.admin)
        self.assertEqual((status, body["code"]), (405, "METHOD_NOT_ALLOWED"))

    @inlineCallbacks
    def test_body_cap(self) -> Any:
        """A body over 1 MB is refused with 413, its bytes discarded."""
        status, body, _ = yield self.answer("POST", "/api/v5/login", data=b"x" * (1024 * 1024 + 10))
        self.assertEqual((status, body["code"]), (413, "PAYLOAD_TOO_LARGE"))

    @inlineCallbacks
    def test_metrics(self) -> Any:
        """/metrics and /api/v5/prometheus/stats need authentication and serve the gateway's registry
        with process metrics."""
        for path in ("/metrics", "/api/v5/prometheus/stats"):
            status, _, _ = yield self.answer("GET", path)
            self.assertEqual(status, 401)
            response = yield self.request("GET", path, self.viewer)
            text = (yield response.text()).splitlines()
            self.assertEqual(response.code, 200)
            self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("text/plain"))
            self.assertTrue(any(line.startswith("ocppgw_connected_charge_points") for line in text))
            self.assertTrue(any(line.startswith("process_resident_memory_bytes") for line in text))

    @inlineCallbacks
    def test_swagger(self) -> Any:
        """The OpenAPI document lists every served route with its methods and path parameters."""
        status, doc, _ = yield self.answer("GET", "/api-docs/swagger.json", self.viewer)
        self.assertEqual(status, 200)
        self.assertEqual(doc["openapi"], "3.0.3")
        paths = doc["paths"]
        self.assertEqual(set(paths["/api/v5/gateways/ocpp/clients/{clientid}"]), {"get", "delete"})
        self.assertIn("/metrics", paths)
        self.assertIn("/api/v5/login", paths)
        names = [p["name"] for p in paths["/api/v5/gateways/ocpp/clients"]["get"]["parameters"]]
        self.assertIn("like_clientid", names)

    def test_port_in_use(self) -> None:
        """A second gateway on the API's port stops with one gw.ini: [api] bind line."""
        port = self.gw.service.api.port.getHost().port
        config = config_from_string(
            f"[gateway]\ndata_dir = {self.data_dir}\n[api]\nbind = 127.0.0.1:{port}\n"
            "[listeners.ws.default]\nbind = 127.0.0.1:0\n"
        )
        service = GatewayService(config, reactor)
        with self.assertRaises(StartupError) as caught:
            service.privilegedStartService()
        self.assertEqual(len(caught.exception.problems), 1)
        self.assertTrue(
            caught.exception.problems[0].startswith(f"gw.ini: [api] bind: cannot listen on 127.0.0.1:{port}")
        )


class ClientTests(ApiTestCase):
    @inlineCallbacks
    def test_list_get_subscriptions_kick(self) -> Any:
        """A connected charge point is listed with real counters, found by filters, shown with its
        subscription, then kicked: it sees close 1000 and the API answers 404 for it."""
        client = yield self.gw.connect("CP1")
        yield self.gw.boot(client, "CP1")
        status, page, _ = yield self.answer("GET", "/api/v5/gateways/ocpp/clients", self.admin)
        self.assertEqual(status, 200)
        self.assertEqual(page["meta"], {"page": 1, "limit": 100, "hasnext": False, "count": 1})
        (cp,) = page["data"]
        self.assertEqual(
            (cp["clientid"], cp["proto_name"], cp["proto_ver"], cp["node"]),
            ("CP1", "OCPP", "1.6", "testnode"),
        )
        self.assertEqual((cp["ip_address"], cp["connected"], cp["mountpoint"]), ("127.0.0.1", True, "ocpp/"))
        self.assertGreater(cp["recv_oct"], 0)
        self.assertGreater(cp["send_oct"], 0)
        self.assertEqual((cp["recv_cnt"], cp["send_cnt"]), (1, 1))  # BootNotification and its reply
        self.assertEqual(
            (cp["mqueue_len"], cp["mqueue_dropped"], cp["inflight_cnt"], cp["subscriptions_cnt"]),
            (0, 0, 0, 1),
        )
        for query, count in [
            ("clientid=CP1", 1), ("clientid=CP2", 0), ("ip_address=127.0.0.1", 1), ("ip_address=10.0.0.1", 0),
            ("conn_state=connected", 1), ("proto_ver=1.6", 1), ("gte_connected_at=0", 1),
            ("lte_connected_at=0", 0), ("node=testnode", 1),
        ]:  # fmt: skip
            status, page, _ = yield self.answer("GET", f"/api/v5/gateways/ocpp/clients?{query}", self.admin)
            self.assertEqual((status, page["meta"]["count"]), (200, count), query)
        status, page, _ = yield self.answer(
            "GET", "/api/v5/gateways/ocpp/clients?like_clientid=CP", self.admin
        )
        self.assertEqual((len(page["data"]), "count" in page["meta"]), (1, False))
        for query in ("ip_address=notanip", "gte_connected_at=x", "node=other", "page=0", "limit=x"):
            status, body, _ = yield self.answer("GET", f"/api/v5/gateways/ocpp/clients?{query}", self.admin)
            self.assertIn((status, body["code"]), [(400, "BAD_REQUEST"), (400, "INVALID_PARAMETER")], query)
        status, one, _ = yield self.answer("GET", "/api/v5/gateways/ocpp/clients/CP1", self.viewer)
        self.assertEqual((status, one["clientid"]), (200, "CP1"))
        status, subs, _ = yield self.answer(
            "GET", "/api/v5/gateways/ocpp/clients/CP1/subscriptions", self.viewer
        )
        self.assertEqual(subs, [{"topic": "ocpp/cs/CP1", "qos": 1, "nl": 0, "rap": 0, "rh": 0}])
        status, _, _ = yield self.answer("DELETE", "/api/v5/gateways/ocpp/clients/CP1", self.admin)
        self.assertEqual(status, 204)
        closed = yield client.wait_closed()
        self.assertEqual(closed, (1000, "kicked"))
        for method, path in [("GET", "/CP1"), ("DELETE", "/CP1"), ("GET", "/CP1/subscriptions")]:
            status, body, _ = yield self.answer(method, "/api/v5/gateways/ocpp/clients" + path, self.admin)
            self.assertEqual((status, body["code"]), (404, "RESOURCE_NOT_FOUND"))
