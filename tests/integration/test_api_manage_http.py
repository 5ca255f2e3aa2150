"""Every management endpoint through real HTTP (treq) against a running gateway: each success shape
and each error code of contract B.1 to B.3 that we answer, and a viewer refused every change."""

from __future__ import annotations

import base64
import io
from typing import Any

import jwt
import treq
from twisted.internet.defer import inlineCallbacks

from tests.integration.test_api_core import ApiTestCase
from tests.support import free_port

GATEWAY = "/api/v5/gateways/ocpp"
LISTENERS = GATEWAY + "/listeners"
DEFAULT = LISTENERS + "/ocpp:ws:default"
AUTHN = GATEWAY + "/authentication"
USERS = AUTHN + "/users"
BUILT_IN = {
    "mechanism": "password_based",
    "backend": "built_in_database",
    "user_id_type": "clientid",
    "password_hash_algorithm": {"name": "sha256", "salt_position": "suffix"},
}
JWT = {"mechanism": "jwt", "from": "password", "algorithm": "hmac-based", "secret": "jwt-s3cret"}
# contract A.2: sha256, salt suffix, password secret123
HASHED_CSV = (
    b"user_id,password_hash,salt,is_superuser\n"
    b"CP001,59168fbe058b89d124b99700a419c0c57fe43116f91f5202a98902a77eb5a40e,"
    b"e378187547bf2d6f0545a3f441aa4d8a,false\n"
)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class HttpCase(ApiTestCase):
    """``ApiTestCase`` with the error-body check and multipart uploads."""

    @inlineCallbacks
    def error(self, expected: tuple[int, str], method: str, path: str, body: Any = None) -> Any:
        """Ask as administrator; assert (status, code); return the message."""
        status, answer, _ = yield self.answer(method, path, self.admin, body=body)
        self.assertEqual((status, answer["code"] if answer else None), expected, answer)
        self.assertIsInstance(answer["message"], str)
        return answer["message"]

    @inlineCallbacks
    def upload(self, field: str, name: str, content: bytes, query: str = "") -> Any:
        """POST ``content`` as multipart field ``field`` named ``name`` to import_users."""
        response = yield treq.post(
            self.gw.api_url + AUTHN + "/import_users" + query,
            headers=self.admin,
            files={field: (name, "application/octet-stream", io.BytesIO(content))},
            pool=self.pool,
        )
        body = yield response.json()
        return response.code, body


class GatewayHttpTests(HttpCase):
    @inlineCallbacks
    def test_list_by_status(self) -> Any:
        """?status=running lists ocpp, ?status=stopped lists nothing, an unknown status is 400."""
        status, body, _ = yield self.answer("GET", "/api/v5/gateways?status=running", self.admin)
        self.assertEqual((status, [g["name"] for g in body]), (200, ["ocpp"]))
        self.assertEqual(
            set(body[0]["node_status"][0]), {"node", "status", "max_connections", "current_connections"}
        )
        status, body, _ = yield self.answer("GET", "/api/v5/gateways?status=stopped", self.admin)
        self.assertEqual((status, body), (200, []))
        message = yield self.error((400, "BAD_REQUEST"), "GET", "/api/v5/gateways?status=sleepy")
        self.assertIn("sleepy", message)

    @inlineCallbacks
    def test_get(self) -> Any:
        """GET /gateways/ocpp: the config shape with durations as text, listeners without status."""
        status, body, _ = yield self.answer("GET", GATEWAY, self.admin)
        self.assertEqual(status, 200)
        self.assertEqual((body["name"], body["status"], body["enable"]), ("ocpp", "running", True))
        self.assertTrue(body["default_heartbeat_interval"].endswith("s"))
        self.assertEqual(set(body["upstream"]) >= {"topic", "reply_topic", "error_topic"}, True)
        (listener,) = body["listeners"]
        self.assertEqual(listener["id"], "ocpp:ws:default")
        self.assertNotIn("status", listener)
        self.assertNotIn("authentication", body)

    @inlineCallbacks
    def test_put(self) -> Any:
        """204 with no restart header for a runtime key, X-Restart-Required for a restart-only key,
        400 for an unknown field, a wrong type and a value gw.ini refuses."""
        status, _, response = yield self.answer("PUT", GATEWAY, self.admin, body={"mountpoint": "m/"})
        self.assertEqual(status, 204)
        self.assertIsNone(response.headers.getRawHeaders("x-restart-required"))
        status, body, _ = yield self.answer("GET", GATEWAY, self.admin)
        self.assertEqual(body["mountpoint"], "m/")
        status, _, response = yield self.answer("PUT", GATEWAY, self.admin, body={"idle_timeout": "45s"})
        self.assertEqual(status, 204)
        self.assertEqual(response.headers.getRawHeaders("x-restart-required"), ["idle_timeout"])
        message = yield self.error((400, "BAD_REQUEST"), "PUT", GATEWAY, {"sleepy": True})
        self.assertIn("sleepy", message)
        yield self.error((400, "BAD_REQUEST"), "PUT", GATEWAY, {"mountpoint": {"a": 1}})
        yield self.error((400, "BAD_REQUEST"), "PUT", GATEWAY, {"upstream": "cp/x"})
        message = yield self.error(
            (400, "BAD_REQUEST"), "PUT", GATEWAY, {"default_heartbeat_interval": "soon"}
        )
        self.assertTrue(message.startswith("Invalid configurations"), message)
        yield self.error((400, "BAD_REQUEST"), "PUT", GATEWAY, ["mountpoint"])

    @inlineCallbacks
    def test_enable_bad_flag(self) -> Any:
        """enable/maybe is 400 and leaves the gateway running."""
        message = yield self.error((400, "BAD_REQUEST"), "PUT", GATEWAY + "/enable/maybe")
        self.assertIn("maybe", message)
        _, body, _ = yield self.answer("GET", GATEWAY, self.admin)
        self.assertEqual(body["status"], "running")


class ListenerHttpTests(HttpCase):
    def extra(self, name: str = "extra", bind: str | None = None) -> dict[str, Any]:
        return {"type": "ws", "name": name, "bind": bind or f"127.0.0.1:{free_port()}"}

    @inlineCallbacks
    def test_list_and_get(self) -> Any:
        """The list has status and node_status; GET one has id, type, name, running; unknown or
        malformed ids are 404."""
        status, body, _ = yield self.answer("GET", LISTENERS, self.admin)
        self.assertEqual((status, [x["id"] for x in body]), (200, ["ocpp:ws:default"]))
        self.assertEqual(body[0]["status"]["running"], True)
        self.assertEqual(len(body[0]["node_status"]), 1)
        status, body, _ = yield self.answer("GET", DEFAULT, self.admin)
        self.assertEqual((status, body["type"], body["name"], body["running"]), (200, "ws", "default", True))
        yield self.error((404, "RESOURCE_NOT_FOUND"), "GET", LISTENERS + "/ocpp:ws:nope")
        message = yield self.error((404, "RESOURCE_NOT_FOUND"), "GET", LISTENERS + "/garbage")
        self.assertEqual(message, "Listener not found: garbage")

    @inlineCallbacks
    def test_create(self) -> Any:
        """201 with the listener; the same name again is 400 listener_name_occupied; a missing key,
        an unknown field and a bind that cannot be had are 400."""
        status, body, _ = yield self.answer("POST", LISTENERS, self.admin, body=self.extra())
        self.assertEqual(
            (status, body["id"], body["type"], body["name"]), (201, "ocpp:ws:extra", "ws", "extra")
        )
        message = yield self.error((400, "BAD_REQUEST"), "POST", LISTENERS, self.extra())
        self.assertIn("listener_name_occupied", message)
        message = yield self.error((400, "BAD_REQUEST"), "POST", LISTENERS, {"type": "ws", "name": "x"})
        self.assertEqual(message, "bind is required")
        yield self.error((400, "BAD_REQUEST"), "POST", LISTENERS, {**self.extra("y"), "sleepy": 1})
        taken = self.gw.service.listener("ws.default").port.getHost().port
        message = yield self.error(
            (400, "BAD_REQUEST"), "POST", LISTENERS, self.extra("z", f"127.0.0.1:{taken}")
        )
        self.assertTrue(message.startswith("Invalid bind address"), message)
        status, body, _ = yield self.answer("GET", LISTENERS, self.admin)
        self.assertEqual(sorted(x["id"] for x in body), ["ocpp:ws:default", "ocpp:ws:extra"])

    @inlineCallbacks
    def test_update(self) -> Any:
        """PUT answers 200 with the new values; an unknown id is 400 ``Listener … not found``."""
        yield self.answer("POST", LISTENERS, self.admin, body=self.extra())
        body = {**self.extra(), "max_connections": 7, "websocket": {"path": "/x"}}
        status, answer, _ = yield self.answer("PUT", LISTENERS + "/ocpp:ws:extra", self.admin, body=body)
        self.assertEqual((status, answer["max_connections"], answer["websocket"]["path"]), (200, 7, "/x"))
        message = yield self.error((400, "BAD_REQUEST"), "PUT", LISTENERS + "/ocpp:ws:nope", body)
        self.assertEqual(message, "Listener ocpp:ws:nope not found")

    @inlineCallbacks
    def test_delete(self) -> Any:
        """DELETE is 204, then 404; the last listener cannot be deleted (400) and still listens."""
        yield self.answer("POST", LISTENERS, self.admin, body=self.extra())
        status, _, _ = yield self.answer("DELETE", LISTENERS + "/ocpp:ws:extra", self.admin)
        self.assertEqual(status, 204)
        yield self.error((404, "RESOURCE_NOT_FOUND"), "DELETE", LISTENERS + "/ocpp:ws:extra")
        yield self.error((400, "BAD_REQUEST"), "DELETE", DEFAULT)
        status, body, _ = yield self.answer("GET", DEFAULT, self.admin)
        self.assertEqual((status, body["running"]), (200, True))
        client = yield self.gw.connect("LAST", ocpp_client=False)
        yield client.close()


class AuthnHttpTests(HttpCase):
    @inlineCallbacks
    def test_lifecycle(self) -> Any:
        """GET 204 when none; PUT when none is 400; POST 201 (the A.4 jwt body, no backend key), POST
        again 400; GET 200 with id, chain_name and the secret redacted; DELETE 204 twice, then 204."""
        status, body, _ = yield self.answer("GET", AUTHN, self.admin)
        self.assertEqual((status, body), (204, None))
        message = yield self.error((400, "BAD_REQUEST"), "PUT", AUTHN, JWT)
        self.assertEqual(message, "The authentication not found on ocpp")
        status, body, _ = yield self.answer("POST", AUTHN, self.admin, body=JWT)
        self.assertEqual((status, body["secret"], body["id"]), (201, "******", "jwt"))
        message = yield self.error((400, "BAD_REQUEST"), "POST", AUTHN, JWT)
        self.assertEqual(message, "The authentication already exist on ocpp")
        status, body, _ = yield self.answer("GET", AUTHN, self.admin)
        self.assertEqual((status, body["id"], body["chain_name"]), (200, "jwt", "ocpp:global"))
        self.assertEqual(body["secret"], "******")
        for _ in range(2):
            status, _, _ = yield self.answer("DELETE", AUTHN, self.admin)
            self.assertEqual(status, 204)
        status, _, _ = yield self.answer("GET", AUTHN, self.admin)
        self.assertEqual(status, 204)

    @inlineCallbacks
    def test_bad_bodies(self) -> Any:
        """An unknown backend, an unknown field and a wrong type are 400 BAD_REQUEST, nothing created."""
        yield self.error((400, "BAD_REQUEST"), "POST", AUTHN, {**BUILT_IN, "backend": "ldap"})
        yield self.error((400, "BAD_REQUEST"), "POST", AUTHN, {**BUILT_IN, "sleepy": 1})
        yield self.error((400, "BAD_REQUEST"), "POST", AUTHN, {**BUILT_IN, "password_hash_algorithm": 3})
        status, _, _ = yield self.answer("GET", AUTHN, self.admin)
        self.assertEqual(status, 204)

    @inlineCallbacks
    def test_put_redacted_keeps_secret(self) -> Any:
        """The GET result (without id and chain_name) sent back with ``******`` keeps the secret: the
        next GET still redacts it and a token signed with the real secret still gets in, one signed
        with ``******`` does not."""
        yield self.answer("POST", AUTHN, self.admin, body=JWT)
        _, shown, _ = yield self.answer("GET", AUTHN, self.admin)
        shown = {k: v for k, v in shown.items() if k not in ("id", "chain_name")}
        status, body, _ = yield self.answer("PUT", AUTHN, self.admin, body={**shown, "cache_ttl": "0s"})
        self.assertEqual((status, body["secret"]), (200, "******"))
        _, body, _ = yield self.answer("GET", AUTHN, self.admin)
        self.assertEqual(body["secret"], "******")
        good = jwt.encode({"sub": "JW1"}, "jwt-s3cret", algorithm="HS256")
        client = yield self.gw.connect("JW1", ocpp_client=False, additional_headers=_basic("JW1", good))
        yield client.close()
        bad = jwt.encode({"sub": "JW2"}, "******", algorithm="HS256")
        status, _, _ = yield self.gw.refused("JW2", additional_headers=_basic("JW2", bad))
        self.assertEqual(status, 401)


class UsersHttpTests(HttpCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        status, body, _ = yield self.answer("POST", AUTHN, self.admin, body=BUILT_IN)
        self.assertEqual(status, 201, body)

    @inlineCallbacks
    def add(self, user_id: str, superuser: bool = False) -> Any:
        body = {"user_id": user_id, "password": "pw", "is_superuser": superuser}
        status, answer, _ = yield self.answer("POST", USERS, self.admin, body=body)
        self.assertEqual(status, 201, answer)

    @inlineCallbacks
    def test_paging_and_filter(self) -> Any:
        """page/limit page the list with meta; ≤ 0 is 400 INVALID_PARAMETER; is_superuser filters."""
        for user_id, superuser in (("U1", False), ("U2", True), ("U3", False)):
            yield self.add(user_id, superuser)
        status, body, _ = yield self.answer("GET", USERS + "?page=2&limit=2", self.admin)
        self.assertEqual(status, 200)
        self.assertEqual(body["meta"], {"page": 2, "limit": 2, "hasnext": False, "count": 3})
        self.assertEqual(len(body["data"]), 1)
        for query in ("page=0", "limit=0", "page=-1", "limit=-5"):
            message = yield self.error((400, "INVALID_PARAMETER"), "GET", USERS + "?" + query)
            self.assertEqual(message, "page_limit_invalid")
        _, body, _ = yield self.answer("GET", USERS + "?is_superuser=true", self.admin)
        self.assertEqual(body["data"], [{"user_id": "U2", "is_superuser": True}])
        _, body, _ = yield self.answer("GET", USERS + "?is_superuser=false", self.admin)
        self.assertEqual(sorted(u["user_id"] for u in body["data"]), ["U1", "U3"])
        yield self.error((400, "BAD_REQUEST"), "GET", USERS + "?is_superuser=maybe")

    @inlineCallbacks
    def test_one_user_errors(self) -> Any:
        """Unknown users are 404 NOT_FOUND ``User not found`` for GET, PUT and DELETE; a PUT with
        neither field is 400 ``Missing required parameter: password``; bad create bodies are 400."""
        for method, body in (("GET", None), ("PUT", {"is_superuser": True}), ("DELETE", None)):
            message = yield self.error((404, "NOT_FOUND"), method, USERS + "/ghost", body)
            self.assertEqual(message, "User not found")
        yield self.add("U1")
        message = yield self.error((400, "BAD_REQUEST"), "PUT", USERS + "/U1", {})
        self.assertEqual(message, "Missing required parameter: password")
        yield self.error((400, "BAD_REQUEST"), "PUT", USERS + "/U1", {"is_superuser": "yes"})
        yield self.error((400, "BAD_REQUEST"), "POST", USERS, {"user_id": "U9"})
        yield self.error((409, "ALREADY_EXISTS"), "POST", USERS, {"user_id": "U1", "password": "x"})

    @inlineCallbacks
    def test_import_hashed_csv(self) -> Any:
        """The A.2 hashed CSV imports (counts) and CP001 gets in with secret123, not another password."""
        status, body = yield self.upload("filename", "users.csv", HASHED_CSV)
        self.assertEqual(status, 200, body)
        self.assertEqual((body["total"], body["success"], body["failed"]), (1, 1, 0))
        status, body, _ = yield self.answer("GET", USERS + "/CP001", self.admin)
        self.assertEqual((status, body), (200, {"user_id": "CP001", "is_superuser": False}))
        client = yield self.gw.connect(
            "CP001", ocpp_client=False, additional_headers=_basic("CP001", "secret123")
        )
        yield client.close()
        status, _, _ = yield self.gw.refused("CP001", additional_headers=_basic("CP001", "secret124"))
        self.assertEqual(status, 401)

    @inlineCallbacks
    def test_import_plain_json_and_errors(self) -> Any:
        """?type=plain takes clear JSON; no ``filename`` field, an unsupported extension and a bad
        type are 400."""
        plain = b'[{"user_id":"P1","password":"pw1","is_superuser":true},{"user_id":"P2","password":"pw2"}]'
        status, body = yield self.upload("filename", "users.json", plain, "?type=plain")
        self.assertEqual((status, body["total"], body["success"]), (200, 2, 2), body)
        _, body, _ = yield self.answer("GET", USERS + "/P1", self.admin)
        self.assertEqual(body, {"user_id": "P1", "is_superuser": True})
        status, body = yield self.upload("file", "users.csv", HASHED_CSV)
        self.assertEqual(
            (status, body["code"], body["message"]),
            (400, "BAD_REQUEST", "Missing required parameter: filename"),
        )
        status, body = yield self.upload("filename", "users.txt", HASHED_CSV)
        self.assertEqual((status, body["code"]), (400, "BAD_REQUEST"))
        self.assertIn("unsupported file format", body["message"])
        status, body = yield self.upload("filename", "users.csv", HASHED_CSV, "?type=weird")
        self.assertEqual((status, body["code"]), (400, "BAD_REQUEST"))
        message = yield self.error((400, "BAD_REQUEST"), "POST", AUTHN + "/import_users", {"x": 1})
        self.assertEqual(message, "Missing required parameter: filename")

    @inlineCallbacks
    def test_users_gone_with_authenticator(self) -> Any:
        """DELETE of the built-in authenticator deletes its users; without one the users list is 404."""
        yield self.add("U1")
        yield self.answer("DELETE", AUTHN, self.admin)
        message = yield self.error((404, "NOT_FOUND"), "GET", USERS)
        self.assertEqual(message, "Resource not found. path: gateway.ocpp.authentication")
        yield self.answer("POST", AUTHN, self.admin, body=BUILT_IN)
        _, body, _ = yield self.answer("GET", USERS, self.admin)
        self.assertEqual(body["data"], [])


class UnsupportedUsersHttpTests(HttpCase):
    @inlineCallbacks
    def test_non_builtin_backend(self) -> Any:
        """With a jwt authenticator every user operation is 400 ``User error: unsupported_operation``."""
        yield self.answer("POST", AUTHN, self.admin, body=JWT)
        for method, path, body in (
            ("GET", USERS, None),
            ("POST", USERS, {"user_id": "U", "password": "p"}),
            ("GET", USERS + "/U", None),
            ("PUT", USERS + "/U", {"password": "q"}),
            ("DELETE", USERS + "/U", None),
        ):
            message = yield self.error((400, "BAD_REQUEST"), method, path, body)
            self.assertEqual(message, "User error: unsupported_operation", (method, path))
        status, body = yield self.upload("filename", "users.csv", HASHED_CSV)
        self.assertEqual((status, body["message"]), (400, "User error: unsupported_operation"))


class ViewerHttpTests(HttpCase):
    @inlineCallbacks
    def test_viewer_may_not_change(self) -> Any:
        """The viewer key gets 403 UNAUTHORIZED_ROLE on every PUT, POST and DELETE, and nothing changes."""
        changes = (
            ("PUT", GATEWAY, {"mountpoint": "v/"}),
            ("PUT", GATEWAY + "/enable/false", None),
            ("POST", LISTENERS, {"type": "ws", "name": "v", "bind": "127.0.0.1:0"}),
            ("PUT", DEFAULT, {"type": "ws", "name": "default", "bind": "127.0.0.1:0"}),
            ("DELETE", DEFAULT, None),
            ("POST", AUTHN, BUILT_IN),
            ("PUT", AUTHN, BUILT_IN),
            ("DELETE", AUTHN, None),
            ("POST", USERS, {"user_id": "V", "password": "p"}),
            ("PUT", USERS + "/V", {"password": "p"}),
            ("DELETE", USERS + "/V", None),
            ("POST", AUTHN + "/import_users", None),
        )
        for method, path, body in changes:
            status, answer, _ = yield self.answer(method, path, self.viewer, body=body)
            self.assertEqual((status, answer["code"]), (403, "UNAUTHORIZED_ROLE"), (method, path))
        status, body, _ = yield self.answer("GET", GATEWAY, self.viewer)
        self.assertEqual((status, body["mountpoint"], body["status"]), (200, "ocpp/", "running"))
        status, _, _ = yield self.answer("GET", AUTHN, self.viewer)
        self.assertEqual(status, 204)


class MalformedBodyHttpTests(HttpCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        yield self.answer("POST", AUTHN, self.admin, body=BUILT_IN)
        yield self.answer("POST", USERS, self.admin, body={"user_id": "U1", "password": "p"})

    @inlineCallbacks
    def test_every_change_refuses_bad_json(self) -> Any:
        """Malformed JSON, a JSON array and wrong value types are 400 BAD_REQUEST on every PUT and
        POST taking a body, never a 500."""
        targets = (
            ("PUT", GATEWAY),
            ("POST", LISTENERS),
            ("PUT", DEFAULT),
            ("PUT", AUTHN),
            ("POST", USERS),
            ("PUT", USERS + "/U1"),
        )
        for method, path in targets:
            for data in (b"{", b"[1]", b'"text"'):
                status, body, _ = yield self.answer(method, path, self.admin, data=data)
                self.assertEqual((status, body["code"]), (400, "BAD_REQUEST"), (method, path, data))
        listener = {"type": "ws", "name": "default", "bind": "127.0.0.1:0"}
        for wrong in ({"max_connections": "lots"}, {"tcp_options": 5}, {"websocket": {"path": 3}}):
            yield self.error((400, "BAD_REQUEST"), "PUT", DEFAULT, {**listener, **wrong})
        yield self.error((400, "BAD_REQUEST"), "PUT", AUTHN, {**BUILT_IN, "user_id_type": 5})
        yield self.error((400, "BAD_REQUEST"), "POST", USERS, {"user_id": 7, "password": "p"})
        status, body, _ = yield self.answer("GET", DEFAULT, self.admin)
        self.assertEqual((status, body["running"]), (200, True))
