"""The management endpoints through real HTTP: the gateway as the reference lists it, disabling and
enabling it, the authenticator with its secrets redacted, and built-in users with their paging."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks

from ocppgw.config import load_config
from tests.integration.test_api_core import ApiTestCase

AUTHN = "/api/v5/gateways/ocpp/authentication"


class ManageApiTests(ApiTestCase):
    extra_config = ""

    @inlineCallbacks
    def test_gateways(self) -> Any:
        """GET /gateways lists ocpp running with its listener; GET /gateways/ocpp has the config shape."""
        status, body, _ = yield self.answer("GET", "/api/v5/gateways", self.admin)
        self.assertEqual(status, 200)
        (ocpp,) = [g for g in body if g["name"] == "ocpp"]
        self.assertEqual(ocpp["status"], "running")
        self.assertEqual([listener["id"] for listener in ocpp["listeners"]], ["ocpp:ws:default"])
        status, body, _ = yield self.answer("GET", "/api/v5/gateways/ocpp", self.admin)
        self.assertEqual((status, body["name"], body["mountpoint"]), (200, "ocpp", "ocpp/"))
        status, body, _ = yield self.answer("GET", "/api/v5/gateways?status=sleepy", self.admin)
        self.assertEqual((status, body["code"]), (400, "BAD_REQUEST"))

    @inlineCallbacks
    def test_disable_and_enable(self) -> Any:
        """enable/false closes the charge points with 1001 and stops listening; enable/true listens again;
        a viewer may not do either."""
        client = yield self.gw.connect("EN1", ocpp_client=False)
        status, _, _ = yield self.answer("PUT", "/api/v5/gateways/ocpp/enable/false", self.viewer)
        self.assertEqual(status, 403)
        status, _, _ = yield self.answer("PUT", "/api/v5/gateways/ocpp/enable/false", self.admin)
        self.assertEqual(status, 204)
        code, reason = yield client.wait_closed()
        self.assertEqual((code, reason), (1001, "gateway disabled"))
        status, body, _ = yield self.answer("GET", "/api/v5/gateways", self.admin)
        self.assertEqual([g["status"] for g in body if g["name"] == "ocpp"], ["stopped"])
        status, _, _ = yield self.answer("PUT", "/api/v5/gateways/ocpp/enable/true", self.admin)
        self.assertEqual(status, 204)
        again = yield self.gw.connect("EN1", ocpp_client=False)
        self.assertIsNotNone(self.gw.service.router.find("EN1"))
        yield again.close()

    @inlineCallbacks
    def test_no_authenticator_then_users_unsupported(self) -> Any:
        """Without [authentication] the authenticator GET is 204 and user operations are refused."""
        status, _, _ = yield self.answer("GET", AUTHN, self.admin)
        self.assertEqual(status, 204)
        status, body, _ = yield self.answer("GET", AUTHN + "/users", self.admin)
        self.assertIn(status, (400, 404))
        self.assertIn(body["code"], ("BAD_REQUEST", "NOT_FOUND"))


class BuiltinUsersApiTests(ApiTestCase):
    """With the built-in database: users added, listed, changed and deleted through the API, and the
    authenticator's object as the reference shows it."""

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        status, body, _ = yield self.answer(
            "POST",
            AUTHN,
            self.admin,
            body={
                "mechanism": "password_based",
                "backend": "built_in_database",
                "user_id_type": "clientid",
                "password_hash_algorithm": {"name": "sha256", "salt_position": "suffix"},
            },
        )
        self.assertEqual(status, 201, body)

    @inlineCallbacks
    def test_users(self) -> Any:
        """Create (201), duplicate (409), get, list (paged, like_user_id without count), update, delete
        (204), then 404; a charge point gets in with the password the API set."""
        status, body, _ = yield self.answer(
            "POST", AUTHN + "/users", self.admin, body={"user_id": "CP7", "password": "pw7"}
        )
        self.assertEqual((status, body), (201, {"user_id": "CP7", "is_superuser": False, "namespace": None}))
        status, body, _ = yield self.answer(
            "POST", AUTHN + "/users", self.admin, body={"user_id": "CP7", "password": "x"}
        )
        self.assertEqual((status, body["code"]), (409, "ALREADY_EXISTS"))
        status, body, _ = yield self.answer("GET", AUTHN + "/users?like_user_id=CP", self.admin)
        self.assertEqual((status, [u["user_id"] for u in body["data"]]), (200, ["CP7"]))
        self.assertNotIn("count", body["meta"])
        status, body, _ = yield self.answer(
            "PUT", AUTHN + "/users/CP7", self.admin, body={"is_superuser": True}
        )
        self.assertEqual((status, body), (200, {"user_id": "CP7", "is_superuser": True}))
        client = yield self.gw.connect(
            "CP7", ocpp_client=False, additional_headers={"Authorization": _basic_header("CP7", "pw7")}
        )
        yield client.close()
        status, _, _ = yield self.answer("DELETE", AUTHN + "/users/CP7", self.admin)
        self.assertEqual(status, 204)
        status, body, _ = yield self.answer("GET", AUTHN + "/users/CP7", self.admin)
        self.assertEqual((status, body["code"]), (404, "NOT_FOUND"))


def _basic_header(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class PersistenceTests(ApiTestCase):
    """What the API changes survives a restart: the next start reads gw.ini with overrides.json on it."""

    @inlineCallbacks
    def test_changes_read_back_at_the_next_start(self) -> Any:
        """A new mountpoint and a listener added through the API are in the config a restart loads;
        deleting that listener again is remembered too."""
        status, _, _ = yield self.answer(
            "PUT", "/api/v5/gateways/ocpp", self.admin, body={"mountpoint": "persist/"}
        )
        self.assertEqual(status, 204)  # as the reference answers
        status, body, _ = yield self.answer(
            "POST",
            "/api/v5/gateways/ocpp/listeners",
            self.admin,
            body={"type": "ws", "name": "extra", "bind": "127.0.0.1:0", "websocket": {"path": "/cp"}},
        )
        self.assertEqual(status, 201, body)
        restarted = load_config(self.gw.config_path)
        self.assertEqual(restarted.gateway.mountpoint, "persist/")
        labels = sorted(listener.label for listener in restarted.listeners)
        self.assertEqual(labels, ["ws.default", "ws.extra"])
        self.assertEqual([lis.path for lis in restarted.listeners if lis.name == "extra"], ["/cp"])
        extra = "/api/v5/gateways/ocpp/listeners/ocpp:ws:extra"
        status, _, _ = yield self.answer("DELETE", extra, self.admin)
        self.assertEqual(status, 204)
        self.assertEqual([lis.label for lis in load_config(self.gw.config_path).listeners], ["ws.default"])
        overrides = self.data_dir / "overrides.json"
        self.assertEqual(overrides.stat().st_mode & 0o777, 0o600)
        status, _, _ = yield self.answer("PUT", "/api/v5/gateways/ocpp/enable/false", self.admin)
        self.assertEqual(status, 204)
        self.assertFalse(load_config(self.gw.config_path).gateway.enable)  # a restart starts disabled
        status, _, _ = yield self.answer("PUT", "/api/v5/gateways/ocpp/enable/true", self.admin)
        self.assertTrue(load_config(self.gw.config_path).gateway.enable)
