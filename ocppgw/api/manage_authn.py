"""``/gateways/ocpp/authentication``: the authenticator object of the reference (contract B.3, its
backends' fields in A.2 to A.7) mapped onto ``[authentication]`` and its subsections of gw.ini.

A change is saved to overrides.json (the whole section replaced: keys not given are null) and the
gateway's ``AuthenticatorService.swap`` takes it for the next handshake. Secrets (``password``,
``secret``, the ``authorization`` header) come back as ``******``; ``******`` sent back keeps the
stored value. ``public_key`` is the path of a PEM file, as in gw.ini (the reference also takes the
PEM text). The users endpoints are in ``ocppgw.api.manage_users``.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from ocppgw.api.http import ApiRequest, ApiResponse, Route, bad_request
from ocppgw.api.manage_common import SECRET, ManageContext, change_config, duration, ini_text, keep_secret
from ocppgw.api.manage_common import object_body as checked_object
from ocppgw.auth.users import UserStore
from ocppgw.config import AuthenticationSection, GatewayConfig

SECTION = "authentication"
_log = Logger()
_MAPPINGS = ("headers", "body", "verify_claims", "filter")
_HASH = {"name": "password_hash_algorithm", "salt_position": "salt_position", "salt_rounds": "salt_rounds"}
_HASH |= {"mac_fun": "mac_fun", "iterations": "iterations", "dk_length": "dk_length"}
_SSL = {"cacertfile": "ssl_cacertfile", "certfile": "ssl_certfile", "keyfile": "ssl_keyfile"}
_COMMON = ("mechanism", "backend", "request_timeout", "cache_ttl")
_PRIORITY = "hashing_priority"  # ocppgw's own: the bcrypt/pbkdf2 processes' CPU priority (idle | low)
_BY_BACKEND: dict[str, tuple[str, ...]] = {
    "built_in_database": ("user_id_type", _PRIORITY),
    "http": ("method", "url"),
    "jwt": (
        *("from", "algorithm", "secret", "secret_base64_encoded"),
        *("public_key", "use_jwks", "endpoint", "refresh_interval"),
    ),
    "postgresql": ("server", "database", "username", "password", "pool_size", "query", _PRIORITY),
    "mysql": ("server", "database", "username", "password", "pool_size", "query", _PRIORITY),
    "redis": ("redis_type", "server", "database", "password", "pool_size", "cmd", _PRIORITY),
    "mongodb": (
        *("mongo_type", "server", "database", "username", "password", "pool_size", "collection"),
        *("password_hash_field", "salt_field", "is_superuser_field", "auth_source", _PRIORITY),
    ),
}
_HASHING = frozenset({"built_in_database", "postgresql", "mysql", "redis", "mongodb"})
_ALL_KEYS = (*_COMMON, *_HASH.values(), *_SSL.values(), "ssl_verify")
_ALL_KEYS += tuple(dict.fromkeys(k for keys in _BY_BACKEND.values() for k in keys))
_SECRETS = frozenset({"password", "secret"})
_ACCEPTED = frozenset({"id", "chain_name", "enable", "password_hash_algorithm", "ssl", *_MAPPINGS})
_ACCEPTED |= set(_ALL_KEYS) - set(_HASH.values()) - set(_SSL.values()) - {"ssl_verify"}


def _field(section: AuthenticationSection, key: str) -> Any:
    value = getattr(section, "jwt_from" if key == "from" else key)
    if key in _SECRETS:
        return SECRET if value else None
    if key in ("request_timeout", "cache_ttl", "refresh_interval"):
        return duration(value)
    return str(value) if value is not None and not isinstance(value, str | int | float | bool) else value


def render(section: AuthenticationSection) -> dict[str, Any]:
    """The authenticator object of ``section``, redacted, with ``id`` and ``chain_name``."""
    backend = section.backend
    result: dict[str, Any] = {key: _field(section, key) for key in _COMMON}
    result["enable"] = True
    if backend in _HASHING:
        algorithm = {"name": section.password_hash_algorithm, "salt_position": section.salt_position}
        if section.password_hash_algorithm == "bcrypt":
            algorithm = {"name": "bcrypt", "salt_rounds": section.salt_rounds}
        elif section.password_hash_algorithm == "pbkdf2":
            algorithm = {"name": "pbkdf2", "mac_fun": section.mac_fun, "iterations": section.iterations}
            algorithm["dk_length"] = section.dk_length
        result["password_hash_algorithm"] = algorithm
    result |= {key: _field(section, key) for key in _BY_BACKEND[backend]}
    if backend != "built_in_database":
        ssl = {key: getattr(section, ini) for key, ini in _SSL.items()}
        ssl = {key: str(value) if value is not None else None for key, value in ssl.items()}
        enabled = any(ssl.values()) or section.url.startswith("https:")
        result["ssl"] = {
            "enable": enabled,
            **ssl,
            "verify": "verify_peer" if section.ssl_verify else "verify_none",
        }
    for name in _MAPPINGS:
        mapping = dict(getattr(section, name))
        if mapping or (name == "headers" and backend == "http"):
            result[name] = {k: (SECRET if k == "authorization" else v) for k, v in mapping.items()}
    result["id"] = "jwt" if backend == "jwt" else f"password_based:{backend}"
    result["chain_name"] = "ocpp:global"
    return result


def ini_sections(body: Any, stored: AuthenticationSection | None) -> dict[str, Any]:
    """The overrides sections of an authenticator object: ``[authentication]`` replaced as a whole
    and each mapping subsection replaced (keys dropped as null)."""
    body = checked_object(body, _ACCEPTED, "authentication")
    backend = body.get("backend", "jwt" if body.get("mechanism") == "jwt" else None)  # A.4: no backend
    if backend not in _BY_BACKEND:
        raise bad_request(f"backend: expected one of {', '.join(_BY_BACKEND)}")
    if body.get("enable", True) is not True:
        raise bad_request("enable: false is done with DELETE /gateways/ocpp/authentication")
    given: dict[str, Any] = {key: body.get(key) for key in (*_COMMON, *_BY_BACKEND[backend])}
    given["backend"] = backend
    algorithm = body.get("password_hash_algorithm")
    if algorithm is not None:
        algorithm = checked_object(algorithm, frozenset(_HASH), "password_hash_algorithm")
        given |= {ini: algorithm.get(key) for key, ini in _HASH.items()}
    ssl = checked_object(body.get("ssl") or {}, frozenset(_SSL) | {"enable", "verify"}, "ssl")
    if ssl.get("enable"):
        given |= {ini: ssl.get(key) for key, ini in _SSL.items()}
        given["ssl_verify"] = ssl.get("verify", "verify_peer") == "verify_peer"
    same_backend = stored is not None and stored.backend == backend
    for key in _SECRETS:
        stored_value = getattr(stored, key) if same_backend else None
        given[key] = keep_secret(given.get(key), stored_value)
    section = {key: ini_text(SECTION, key, given.get(key)) for key in _ALL_KEYS}
    sections: dict[str, Any] = {SECTION: section | {"enable": "true"}}
    for name in _MAPPINGS:
        mapping = body.get(name) or {}
        if not isinstance(mapping, dict):
            raise bad_request(f"{name}: expected an object")
        old = dict(getattr(stored, name)) if same_backend else {}
        new = {k: ini_text(name, k, keep_secret(v, old.get(str(k).lower()))) for k, v in mapping.items()}
        sections[f"{SECTION}.{name}"] = dict.fromkeys(old, None) | new
    return sections


class AuthnEndpoints:
    def __init__(self, context: ManageContext) -> None:
        self.context = context

    @property
    def section(self) -> AuthenticationSection | None:
        return self.context.service.config.authentication  # type: ignore[no-any-return]

    def get(self, request: ApiRequest) -> ApiResponse:
        section = self.section
        return ApiResponse(204) if section is None else ApiResponse(200, render(section))

    def create(self, request: ApiRequest) -> ApiResponse:
        if self.section is not None:
            raise bad_request("The authentication already exist on ocpp")
        config = self.apply(ini_sections(request.body, None))
        return ApiResponse(201, render(config.authentication))

    def update(self, request: ApiRequest) -> ApiResponse:
        stored = self.section
        if stored is None:
            raise bad_request("The authentication not found on ocpp")
        body = request.body
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in ("id", "chain_name")}
        config = self.apply(ini_sections(body, stored))
        return ApiResponse(200, render(config.authentication))

    def delete(self, request: ApiRequest) -> ApiResponse:
        stored = self.section
        if stored is not None:
            mappings = {f"{SECTION}.{name}": None for name in _MAPPINGS}
            self.apply({SECTION: None, **mappings})
            if stored.backend == "built_in_database":  # as the reference: its users go with it
                store = UserStore(self.context.service.config.gateway.data_dir)
                try:
                    for user in store.list():
                        store.delete(user.user_id)
                finally:
                    store.close()
        return ApiResponse(204)

    def apply(self, sections: dict[str, Any]) -> GatewayConfig:
        """Save and swap; the answer does not wait for the old backend's pools to stop."""
        config = change_config(self.context, sections)
        stopped = self.context.service.swap_authenticator(config)
        stopped.addErrback(lambda f: _log.failure("stopping the replaced authenticator", f))
        return config


def routes(context: ManageContext) -> list[Route]:
    e = AuthnEndpoints(context)
    path = "/gateways/ocpp/authentication"
    return [
        Route("GET", path, e.get, "The authenticator (204: none)", {200: "authenticator", 204: "none"}),
        Route("POST", path, e.create, "Create the authenticator", {201: "created", 400: "invalid or exists"}),
        Route("PUT", path, e.update, "Replace the authenticator", {200: "changed", 400: "invalid or none"}),
        Route("DELETE", path, e.delete, "Remove the authenticator (and built-in users)", {204: "removed"}),
    ]
