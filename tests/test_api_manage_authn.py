"""Tests for ocppgw.api.manage_authn and manage_users: the authenticator object and the built-in
users (contract B.3, A.2 "User REST bodies"), handler level."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.api import manage_authn, manage_users
from ocppgw.api.http import ApiError, ApiRequest
from ocppgw.api.overrides import read_overrides
from ocppgw.auth import AllowAll
from ocppgw.auth.gate import AuthenticationGate
from ocppgw.config import load_config
from tests.test_api_manage_listeners import INI, call, make_context

AUTHN = "/gateways/ocpp/authentication"
USERS = AUTHN + "/users"
BUILTIN = {"mechanism": "password_based", "backend": "built_in_database", "user_id_type": "clientid"}
HTTP_INI = INI + "[authentication]\nbackend = http\nurl = http://127.0.0.1:1/auth\n"
HTTP_INI += "[authentication.headers]\nauthorization = Bearer s3cret\n"


class AuthenticatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.context = make_context(self)
        self.routes = manage_authn.routes(self.context)

    def test_none_is_204(self) -> None:
        """GET without an authenticator is 204 with no body; PUT is 400 'not found'."""
        self.assertEqual(call(self.routes, "GET", AUTHN).status, 204)
        e = self.assertRaises(ApiError, call, self.routes, "PUT", AUTHN, BUILTIN)
        self.assertEqual(e.message, "The authentication not found on ocpp")

    def test_post_swaps_and_persists(self) -> None:
        """POST creates it (201, id and chain_name), the next handshake uses it, it survives a reload;
        a second POST is 400."""
        response = call(self.routes, "POST", AUTHN, BUILTIN)
        self.assertEqual(response.status, 201)
        self.assertEqual(response.body["id"], "password_based:built_in_database")
        self.assertEqual(response.body["chain_name"], "ocpp:global")
        self.assertEqual(response.body["user_id_type"], "clientid")
        self.assertIsInstance(self.context.service.auth_service.authenticator.current, AuthenticationGate)
        reloaded = load_config(self.context.service.config.source)
        self.assertEqual(reloaded.authentication.backend, "built_in_database")
        e = self.assertRaises(ApiError, call, self.routes, "POST", AUTHN, BUILTIN)
        self.assertEqual(e.message, "The authentication already exist on ocpp")

    def test_hashing_priority(self) -> None:
        """ocppgw's own ``hashing_priority``: ``idle`` by default on the hashing backends, ``low`` taken
        and kept, absent from backends that hash nothing, a bad value 400."""
        self.assertEqual(call(self.routes, "POST", AUTHN, BUILTIN).body["hashing_priority"], "idle")
        response = call(self.routes, "PUT", AUTHN, {**BUILTIN, "hashing_priority": "low"})
        self.assertEqual(response.body["hashing_priority"], "low")
        saved = load_config(self.context.service.config.source).authentication
        self.assertEqual(saved.hashing_priority, "low")
        e = self.assertRaises(ApiError, call, self.routes, "PUT", AUTHN, {**BUILTIN, "hashing_priority": "x"})
        self.assertEqual(e.status, 400)
        http = {"backend": "http", "url": "http://127.0.0.1:1/auth"}
        self.assertNotIn("hashing_priority", call(self.routes, "PUT", AUTHN, http).body)

    def test_delete_back_to_allow_all(self) -> None:
        """DELETE removes it (204, idempotent) and every charge point may connect again."""
        call(self.routes, "POST", AUTHN, BUILTIN)
        self.assertEqual(call(self.routes, "DELETE", AUTHN).status, 204)
        self.assertIsInstance(self.context.service.auth_service.authenticator.current, AllowAll)
        self.assertIsNone(read_overrides(self.context.data_dir)["authentication"])
        self.assertEqual(call(self.routes, "DELETE", AUTHN).status, 204)

    def test_invalid(self) -> None:
        """An unknown backend, unknown field or bad value is 400 and nothing is saved."""
        for body in ({"backend": "ldap"}, {**BUILTIN, "colour": 1}, {**BUILTIN, "user_id_type": "x"}):
            e = self.assertRaises(ApiError, call, self.routes, "POST", AUTHN, body)
            self.assertEqual(e.status, 400)
        self.assertEqual(read_overrides(self.context.data_dir), {})


class RedactionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.context = make_context(self, HTTP_INI)
        self.routes = manage_authn.routes(self.context)

    def test_redacted_and_kept(self) -> None:
        """Secrets come back as ******; the GET result sent back keeps them."""
        body = call(self.routes, "GET", AUTHN).body
        self.assertEqual(body["headers"]["authorization"], "******")
        self.assertEqual(body["backend"], "http")
        body["url"] = "http://127.0.0.1:2/auth"
        response = call(self.routes, "PUT", AUTHN, body)
        self.assertEqual(response.body["url"], "http://127.0.0.1:2/auth")
        section = self.context.service.config.authentication
        self.assertEqual(section.headers["authorization"], "Bearer s3cret")


class UserTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.context = make_context(self)
        call(manage_authn.routes(self.context), "POST", AUTHN, BUILTIN)
        self.routes = manage_users.routes(self.context)

    def test_crud(self) -> None:
        """Create (201 with namespace null), get, update, delete, with the reference's errors."""
        created = call(self.routes, "POST", USERS, {"user_id": "CP001", "password": "s3cret"})
        self.assertEqual(
            (created.status, created.body),
            (201, {"user_id": "CP001", "is_superuser": False, "namespace": None}),
        )
        e = self.assertRaises(
            ApiError, call, self.routes, "POST", USERS, {"user_id": "CP001", "password": "x"}
        )
        self.assertEqual((e.status, e.code, e.message), (409, "ALREADY_EXISTS", "User already exists"))
        self.assertEqual(
            call(self.routes, "GET", USERS + "/CP001").body, {"user_id": "CP001", "is_superuser": False}
        )
        e = self.assertRaises(ApiError, call, self.routes, "PUT", USERS + "/CP001", {})
        self.assertEqual(e.message, "Missing required parameter: password")
        updated = call(self.routes, "PUT", USERS + "/CP001", {"is_superuser": True})
        self.assertEqual(updated.body, {"user_id": "CP001", "is_superuser": True})
        self.assertEqual(call(self.routes, "DELETE", USERS + "/CP001").status, 204)
        e = self.assertRaises(ApiError, call, self.routes, "GET", USERS + "/CP001")
        self.assertEqual((e.status, e.code, e.message), (404, "NOT_FOUND", "User not found"))

    def test_list_filters(self) -> None:
        """like_user_id omits count; is_superuser filters exactly."""
        for user_id, superuser in (("CP001", False), ("CP002", True), ("XX", False)):
            call(self.routes, "POST", USERS, {"user_id": user_id, "password": "p", "is_superuser": superuser})
        page = call(self.routes, "GET", USERS).body
        self.assertEqual(page["meta"], {"page": 1, "limit": 100, "hasnext": False, "count": 3})
        like = call(self.routes, "GET", USERS, like_user_id="CP").body
        self.assertEqual([u["user_id"] for u in like["data"]], ["CP001", "CP002"])
        self.assertNotIn("count", like["meta"])
        supers = call(self.routes, "GET", USERS, is_superuser="true").body
        self.assertEqual(supers["data"], [{"user_id": "CP002", "is_superuser": True}])

    def test_import(self) -> None:
        """A multipart CSV in field filename imports (hashed by default, plain with ?type=plain);
        no field is 400."""
        boundary = "XyZ"
        csv = "user_id,password,is_superuser\nCP1,pw1,true\nCP2,pw2,false\n"
        raw = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="filename"; filename="u.csv"\r\n'
            f"Content-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n"
        ).encode()
        (route,) = [r for r in self.routes if r.pattern.endswith("import_users")]
        request = ApiRequest(
            "POST", "/x", {}, {"type": ["plain"]}, None, raw, f"multipart/form-data; boundary={boundary}"
        )
        response = route.handler(request)
        self.assertEqual(response.body, {"total": 2, "success": 2, "override": 0, "skipped": 0, "failed": 0})
        self.assertEqual(call(self.routes, "GET", USERS + "/CP1").body["is_superuser"], True)
        e = self.assertRaises(
            ApiError, route.handler, ApiRequest("POST", "/x", content_type="application/json")
        )
        self.assertEqual(e.message, "Missing required parameter: filename")

    def test_not_builtin(self) -> None:
        """Without an authenticator the users are 404; with another backend 400 unsupported_operation."""
        authn = manage_authn.routes(self.context)
        call(authn, "DELETE", AUTHN)
        e = self.assertRaises(ApiError, call, self.routes, "GET", USERS)
        self.assertEqual(e.status, 404)
        call(authn, "POST", AUTHN, {"backend": "http", "url": "http://127.0.0.1:1/auth"})
        e = self.assertRaises(ApiError, call, self.routes, "POST", USERS, {"user_id": "a", "password": "b"})
        self.assertEqual((e.status, e.message), (400, "User error: unsupported_operation"))
