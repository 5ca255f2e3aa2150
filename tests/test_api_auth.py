"""``ocppgw.api.auth`` on a ``Clock``: token expiry and its extension on use, the login lockout,
API keys and their bootstrap file."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.api.admins import Admin, AdminStore
from ocppgw.api.auth import ApiAuth, read_api_keys
from ocppgw.api.http import ApiError, ApiRequest


def _auth(clock: Clock, keys: dict[str, tuple[str, str]] | None = None) -> ApiAuth:
    store = AdminStore(Path(tempfile.mkdtemp(prefix="ocppgw-admins-")))
    return ApiAuth(store, clock, 60.0, 3, keys, blocking=lambda f, *a: succeed(f(*a)))


class TokenTests(SynchronousTestCase):
    def code(self, auth: ApiAuth, header: str | None) -> str:
        with self.assertRaises(ApiError) as caught:
            auth.authenticate(header)
        return caught.exception.code

    def test_expiry_extended_on_use(self) -> None:
        """A token lives token_ttl after its last use; then TOKEN_TIME_OUT, then BAD_TOKEN."""
        clock = Clock()
        auth = _auth(clock)
        token = auth.issue_token(Admin("admin", "administrator"))
        clock.advance(59)
        self.assertEqual(auth.authenticate(f"Bearer {token}").name, "admin")
        clock.advance(59)  # 118 s after issue, 59 s after its last use
        self.assertEqual(auth.authenticate(f"Bearer {token}").role, "administrator")
        clock.advance(60)
        self.assertEqual(self.code(auth, f"Bearer {token}"), "TOKEN_TIME_OUT")
        self.assertEqual(self.code(auth, f"Bearer {token}"), "BAD_TOKEN")

    def test_logout_revokes(self) -> None:
        """After logout the token is unknown."""
        auth = _auth(Clock())
        token = auth.issue_token(Admin("admin", "viewer"))
        auth.logout(ApiRequest("POST", "/logout", headers={"authorization": f"Bearer {token}"}))
        self.assertEqual(self.code(auth, f"Bearer {token}"), "BAD_TOKEN")

    def test_api_keys(self) -> None:
        """Basic key:secret with its role; a wrong secret or unknown key is BAD_API_KEY_OR_SECRET."""
        auth = _auth(Clock(), {"ci": ("s3:cret", "viewer")})

        def basic(text: str) -> str:
            return "Basic " + base64.b64encode(text.encode()).decode()

        who = auth.authenticate(basic("ci:s3:cret"))
        self.assertEqual((who.name, who.role, who.kind), ("ci", "viewer", "api_key"))
        self.assertEqual(self.code(auth, basic("ci:wrong")), "BAD_API_KEY_OR_SECRET")
        self.assertEqual(self.code(auth, basic("ci")), "BAD_API_KEY_OR_SECRET")
        self.assertEqual(self.code(auth, None), "AUTHORIZATION_HEADER_ERROR")
        self.assertEqual(self.code(auth, "Bearer"), "AUTHORIZATION_HEADER_ERROR")


class LockoutTests(SynchronousTestCase):
    def login(self, auth: ApiAuth, password: str, peer: str = "10.0.0.1") -> str:
        request = ApiRequest("POST", "/login", body={"username": "admin", "password": password}, peer=peer)
        failure = self.failureResultOf(auth.login(request), ApiError) if password != "good" else None
        if failure is None:
            return "ok"
        return failure.value.code

    def test_locked_for_a_minute(self) -> None:
        """The third failure in a minute locks the address (another is not); a minute later it may log in."""
        clock = Clock()
        auth = _auth(clock)
        auth.store.add("admin", "good")
        self.assertEqual([self.login(auth, "bad") for _ in range(3)], ["BAD_USERNAME_OR_PWD"] * 3)
        with self.assertRaises(ApiError) as caught:
            auth.login(
                ApiRequest("POST", "/login", body={"username": "admin", "password": "good"}, peer="10.0.0.1")
            )
        self.assertEqual(caught.exception.code, "LOGIN_LOCKED")
        self.assertEqual(self.successResultOf(auth.login(ApiRequest(
            "POST", "/login", body={"username": "admin", "password": "good"}, peer="10.0.0.2"
        ))).status, 200)  # fmt: skip
        clock.advance(60)
        response = self.successResultOf(
            auth.login(
                ApiRequest("POST", "/login", body={"username": "admin", "password": "good"}, peer="10.0.0.1")
            )
        )
        self.assertEqual(response.body["role"], "administrator")

    def test_failures_age_out(self) -> None:
        """Failures more than a minute apart never lock."""
        clock = Clock()
        auth = _auth(clock)
        for _ in range(5):
            self.assertEqual(self.login(auth, "bad"), "BAD_USERNAME_OR_PWD")
            clock.advance(31)


class BootstrapFileTests(SynchronousTestCase):
    def test_lines(self) -> None:
        """key:secret[:role] lines; comments and blank lines skipped; a bad line named by number."""
        path = Path(self.mktemp())
        path.write_text("# keys\n\nci:s1\nro:s2:viewer\n", encoding="utf-8")
        self.assertEqual(read_api_keys(path), {"ci": ("s1", "administrator"), "ro": ("s2", "viewer")})
        path.write_text("ci:s1\nro:s2:publisher\n", encoding="utf-8")
        with self.assertRaisesRegex(ValueError, "line 2"):
            read_api_keys(path)
