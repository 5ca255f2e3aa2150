"""Who may call the API: Bearer tokens from ``POST /login``, Basic API keys from ``[api]
bootstrap_file``, roles, and the login lockout; time from the injected clock.

Tokens are opaque random strings kept in memory (a restart logs everyone out), each valid for
``token_ttl`` after its last use. API key secrets are kept only as salted PBKDF2 digests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThread

from ocppgw.api.admins import Admin, AdminStore
from ocppgw.api.http import ADMINISTRATOR, ROLES, ApiError, ApiRequest, ApiResponse, Route, bad_request
from ocppgw.config.loader import read_text_file

LOCKOUT_WINDOW = 60.0  # failures are counted over a minute; a locked address waits a minute
WWW_AUTHENTICATE = 'Basic realm="ocppgw"'
_MAX_TRACKED_ADDRESSES = 10000
API_KEY_NOT_ALLOWED = ("/logout",)  # paths only a logged-in administrator may call


def gateway_version() -> str:
    try:
        return metadata.version("ocppgw")
    except metadata.PackageNotFoundError:
        return "unknown"


def unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message)


@dataclass
class _Token:
    username: str
    role: str
    expires: float


@dataclass(frozen=True)
class _ApiKey:
    salt: bytes
    digest: bytes
    role: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``kind`` is ``token`` or ``api_key``."""

    name: str
    role: str
    kind: str
    token: str = ""


def _digest(secret: bytes, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", secret, salt, 1)


def read_api_keys(path: Path) -> dict[str, tuple[str, str]]:
    """``key:secret[:role]`` lines (blank lines and ``#`` comments skipped) as key -> (secret, role);
    ``ValueError`` names the first bad line."""
    keys: dict[str, tuple[str, str]] = {}
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        role = parts[2] if len(parts) > 2 else ADMINISTRATOR
        if len(parts) not in (2, 3) or not parts[0] or not parts[1] or role not in ROLES:
            raise ValueError(f"line {number}: expected key:secret[:role] with role {' or '.join(ROLES)}")
        keys[parts[0]] = (parts[1], role)
    return keys


class ApiAuth:
    """Checks each request's ``Authorization`` header; serves ``/login`` and ``/logout``.

    ``blocking`` runs the administrators store's slow calls (bcrypt) off the reactor."""

    def __init__(
        self,
        store: AdminStore,
        clock: Any,
        token_ttl: float,
        max_failures: int,
        api_keys: dict[str, tuple[str, str]] | None = None,
        blocking: Callable[..., Deferred[Any]] = deferToThread,
    ) -> None:
        self.store, self.clock = store, clock
        self.token_ttl = token_ttl
        self.max_failures = max_failures
        self.blocking = blocking
        self._tokens: dict[str, _Token] = {}
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._keys: dict[str, _ApiKey] = {}
        for key, (secret, role) in (api_keys or {}).items():
            salt = secrets.token_bytes(16)
            self._keys[key] = _ApiKey(salt, _digest(secret.encode("utf-8"), salt), role)

    # -- per request ------------------------------------------------------

    def authenticate(self, header: str | None) -> Principal:
        """The caller named by an ``Authorization`` header, or the 401 ``ApiError``."""
        if not header:
            raise unauthorized("AUTHORIZATION_HEADER_ERROR", "Support authorization: basic/bearer")
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return self._bearer(value)
        if scheme.lower() == "basic" and value:
            return self._basic(value)
        raise unauthorized("AUTHORIZATION_HEADER_ERROR", "Support authorization: basic/bearer")

    def _bearer(self, token: str) -> Principal:
        entry = self._tokens.get(token)
        if entry is None:
            raise unauthorized("BAD_TOKEN", "Get a token by POST /login")
        now = self.clock.seconds()
        if now >= entry.expires:
            del self._tokens[token]
            raise unauthorized("TOKEN_TIME_OUT", "Token expired, get a new token by POST /login")
        entry.expires = now + self.token_ttl
        return Principal(entry.username, entry.role, "token", token)

    def _basic(self, value: str) -> Principal:
        try:
            key, sep, secret = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized("AUTHORIZATION_HEADER_ERROR", "Malformed basic credentials") from None
        stored = self._keys.get(key)
        if (
            not sep
            or stored is None
            or not hmac.compare_digest(_digest(secret.encode("utf-8"), stored.salt), stored.digest)
        ):
            raise unauthorized("BAD_API_KEY_OR_SECRET", "Check api_key/api_secret")
        return Principal(key, stored.role, "api_key")

    # -- login and logout --------------------------------------------------

    def issue_token(self, admin: Admin) -> str:
        now = self.clock.seconds()
        for token in [t for t, entry in self._tokens.items() if entry.expires <= now]:
            del self._tokens[token]
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Token(admin.username, admin.role, now + self.token_ttl)
        return token

    def revoke(self, token: str) -> None:
        self._tokens.pop(token, None)

    def check_lock(self, address: str) -> None:
        """401 ``LOGIN_LOCKED`` while ``address`` is locked out."""
        now = self.clock.seconds()
        until = self._locked_until.get(address)
        if until is not None:
            if now < until:
                raise unauthorized("LOGIN_LOCKED", "Login locked: too many failed logins, try again later")
            del self._locked_until[address]

    def login_failed(self, address: str) -> None:
        """Count a failure; the ``max_failures``-th within a minute locks ``address`` for a minute."""
        now = self.clock.seconds()
        if len(self._failures) >= _MAX_TRACKED_ADDRESSES and address not in self._failures:
            self._forget_old(now)
        failures = self._failures.setdefault(address, deque())
        while failures and failures[0] <= now - LOCKOUT_WINDOW:
            failures.popleft()
        failures.append(now)
        if len(failures) >= self.max_failures:
            del self._failures[address]
            self._locked_until[address] = now + LOCKOUT_WINDOW

    def _forget_old(self, now: float) -> None:
        for address in [a for a, f in self._failures.items() if not f or f[-1] <= now - LOCKOUT_WINDOW]:
            del self._failures[address]
        for address in [a for a, until in self._locked_until.items() if until <= now]:
            del self._locked_until[address]

    def login(self, request: ApiRequest) -> Deferred[ApiResponse]:
        body = request.body
        if not isinstance(body, dict):
            raise bad_request("expected a JSON object with username and password")
        unknown = set(body) - {"username", "password", "mfa_token"}
        if unknown:
            raise bad_request(f"unknown field: {sorted(unknown)[0]}")
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise bad_request("username and password must be strings")
        self.check_lock(request.peer)
        d = maybeDeferred(self.blocking, self.store.verify, username, password)

        def verified(admin: Admin | None) -> ApiResponse:
            if admin is None:
                self.login_failed(request.peer)
                raise unauthorized("BAD_USERNAME_OR_PWD", "Auth failed")
            return ApiResponse(
                200,
                {
                    "token": self.issue_token(admin),
                    "role": admin.role,
                    "version": gateway_version(),
                    "license": {"edition": "opensource"},
                },
            )

        return d.addCallback(verified)

    def logout(self, request: ApiRequest) -> ApiResponse:
        _, _, token = request.headers.get("authorization", "").strip().partition(" ")
        self.revoke(token.strip())
        return ApiResponse(204)

    def routes(self) -> list[Route]:
        return [
            Route(
                "POST", "/login", self.login, "Log in; a Bearer token",
                {200: "token", 400: "bad body", 401: "wrong username or password, or locked"}, public=True,
            ),
            Route("POST", "/logout", self.logout, "Log out: the token stops working", {204: "logged out"}),
        ]  # fmt: skip
