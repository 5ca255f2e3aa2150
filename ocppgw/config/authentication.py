"""``[authentication]`` and its subsections: the keys, and the checks of the chosen backend.

Every key may hold the per-handshake placeholders (``${clientid}``, ``${username}``, ``${password}``,
``${peerhost}``, ``${cert_common_name}``, ``${cert_subject}``), kept for ``ocppgw.auth.template``; any
other ``${NAME}`` is an environment variable, as everywhere in gw.ini. The subsections
``[authentication.headers]``, ``.body``, ``.verify_claims`` and ``.filter`` hold one line per field.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import urlsplit

from ocppgw.auth.template import PLACEHOLDER, PLACEHOLDERS
from ocppgw.config import values as v
from ocppgw.config.sections import AuthenticationSection
from ocppgw.config.values import MappingRule, Option

SECTION = "authentication"
BACKENDS = ("built_in_database", "http", "jwt", "postgresql", "mysql", "redis", "mongodb")
HASHING_BACKENDS = frozenset({"built_in_database", "postgresql", "mysql", "redis", "mongodb"})
ALGORITHMS = ("plain", "md5", "sha", "sha256", "sha512", "bcrypt", "pbkdf2")
HASHING_PRIORITIES = ("idle", "low")  # bcrypt/pbkdf2 processes: ocppgw.auth.hashing.HashingPool
MAC_FUNS = ("sha", "sha224", "sha256", "sha384", "sha512")
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "redis": 6379, "mongodb": 27017}
REDIS_FIELDS = ("password_hash", "password", "salt", "is_superuser", "clientid_override")
POST_CONTENT_TYPES = ("application/json", "application/x-www-form-urlencoded")
CLAIM_PLACEHOLDERS = frozenset({"clientid", "username"})  # what the reference fills in verify_claims
_VARIABLES = frozenset(PLACEHOLDERS)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _mac_fun(value: str) -> str:
    if value.lower() in ("md4", "md5", "ripemd160"):
        raise v.Invalid(f"{value} cannot be used with pbkdf2; expected one of {', '.join(MAC_FUNS)}")
    return v.one_of(MAC_FUNS)(value)


def _server(value: str) -> tuple[str, int | None]:
    """``host``, ``host:port`` or ``[IPv6]:port``; the backend's default port is added later."""
    host, port = value, None
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise v.Invalid(f"expected HOST:PORT or [IPv6]:PORT, {v.got(value)}")
        port = rest[1:] or None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise v.Invalid(f"expected an IPv6 address inside [ ], {v.got(value)}") from None
    elif ":" in value:
        host, _, port = value.rpartition(":")
        if ":" in host:
            raise v.Invalid(f"write an IPv6 address in brackets, such as [::1]:5432, {v.got(value)}")
    if not host or not re.fullmatch(r"[A-Za-z0-9_.:%-]+", host):
        raise v.Invalid(f"expected HOST:PORT, {v.got(value)}")
    return host, None if port is None else v.port(port)


def _url(value: str) -> str:
    """An http or https URL without user info or fragment; placeholders may fill its path and query.
    Empty means unset (a backend that needs it says so)."""
    if not value:
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise v.Invalid(f"expected an http:// or https:// URL, {v.got(value)}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise v.Invalid(f"expected an http:// or https:// URL, {v.got(value)}")
    if parts.username is not None or "@" in parts.netloc:
        raise v.Invalid("must not hold user info (user:password@); use [authentication.headers]")
    if parts.fragment or value.endswith("#"):
        raise v.Invalid(f"must not have a #fragment, {v.got(value)}")
    if "${" in parts.netloc:
        raise v.Invalid(f"placeholders may fill the path and query only, {v.got(value)}")
    return value


def _dk_length(value: str) -> int | None:
    return None if value == "" else v.integer(value, 1, 2**32 - 1)


def _header_name(key: str) -> str | None:
    return None if _TOKEN.fullmatch(key) else "expected an HTTP header name"


def _header_value(value: str) -> str:
    if any(char in "\r\n\x00" for char in value):
        raise v.Invalid("must not contain CR, LF or NUL")
    return value


def _any_key(key: str) -> str | None:
    return None


def options(base_dir: Path) -> dict[str, Option]:
    """The keys of ``[authentication]``; relative paths in values are taken from ``base_dir``."""

    def option(convert: v.Converter, secret: bool = False) -> Option:
        return Option(convert, _VARIABLES, secret=secret)

    path = option(v.file_in(base_dir))
    return {
        "enable": option(v.boolean),
        "backend": option(v.one_of(BACKENDS)),
        "mechanism": option(v.one_of(("password_based", "jwt"))),
        "request_timeout": option(v.duration_positive),
        "cache_ttl": option(v.duration),
        "password_hash_algorithm": option(v.one_of(ALGORITHMS)),
        "salt_position": option(v.one_of(("prefix", "suffix", "disable"))),
        "salt_rounds": option(v.int_range(5, 31)),
        "mac_fun": option(_mac_fun),
        "iterations": option(v.int_min(1)),
        "dk_length": option(_dk_length),
        "hashing_priority": option(v.one_of(HASHING_PRIORITIES)),
        "user_id_type": option(v.one_of(("username", "clientid"))),
        "method": option(v.one_of(("post", "get"))),
        "url": option(_url),
        "ssl_cacertfile": path,
        "ssl_certfile": path,
        "ssl_keyfile": path,
        "ssl_verify": option(v.boolean),
        "from": option(v.one_of(("password", "username"))),
        "algorithm": option(v.one_of(("hmac-based", "public-key"))),
        "secret": option(v.optional_text, secret=True),
        "secret_base64_encoded": option(v.boolean),
        "public_key": path,
        "use_jwks": option(v.boolean),
        "endpoint": option(_url),
        "refresh_interval": option(v.duration_positive),
        "server": option(_server),
        "database": option(v.text),
        "username": option(v.optional_text),
        "password": option(v.optional_text, secret=True),
        "pool_size": option(v.int_range(1, 1024)),
        "query": option(v.text),
        "redis_type": option(v.one_of(("single",))),
        "cmd": option(v.text),
        "mongo_type": option(v.one_of(("single",))),
        "collection": option(v.text),
        "password_hash_field": option(v.text),
        "salt_field": option(v.text),
        "is_superuser_field": option(v.text),
        "auth_source": option(v.text),
    }


MAPPINGS = {
    f"{SECTION}.headers": MappingRule(_header_name, Option(_header_value, _VARIABLES, secret=True), True),
    f"{SECTION}.body": MappingRule(_any_key, Option(v.text, _VARIABLES)),
    f"{SECTION}.verify_claims": MappingRule(_any_key, Option(v.text, _VARIABLES)),
    f"{SECTION}.filter": MappingRule(_any_key, Option(v.text, _VARIABLES)),
}


class Reporter(Protocol):
    """What the loader's builder offers: problem lines and which keys the file sets."""

    def problem(self, section: str, key: str | None, reason: str) -> None: ...

    def written(self, section: str, key: str) -> bool: ...


class _Check:
    """The checks across the keys of one ``[authentication]`` section."""

    def __init__(self, values: dict[str, Any], report: Reporter) -> None:
        self.values = values
        self.report = report

    def problem(self, key: str, reason: str, section: str = SECTION) -> None:
        self.report.problem(section, key, reason)

    def given(self, key: str) -> bool:
        """Whether ``key`` has a usable value; a key already reported counts as given."""
        if self.report.written(SECTION, key) and key not in self.values:
            return True
        return self.values.get(key) not in (None, "")

    def need(self, key: str, reason: str) -> None:
        if not self.given(key):
            self.problem(key, f"missing, {reason}")

    def value(self, key: str) -> Any:
        return self.values.get(key, getattr(AuthenticationSection, key, None))

    def readable(self, key: str, what: str) -> None:
        path = self.values.get(key)
        if path is None:
            return
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            self.problem(key, f"cannot read {what} {path}: {e.strerror or e}")


def build(
    values: dict[str, Any], mappings: Mapping[str, dict[str, str]], report: Reporter
) -> AuthenticationSection | None:
    """The section of ``values`` (the file's converted keys), or None when it is disabled or absent.

    Problems are reported through ``report``; the caller discards the result if there are any.
    """
    if not values.get("enable", True):
        return None
    check = _Check(values, report)
    backend = values.get("backend")
    mechanism = values.get("mechanism")
    if backend is None:
        if mechanism == "jwt":
            backend = "jwt"
        elif not report.written(SECTION, "backend"):
            check.problem("backend", f"missing, expected one of {', '.join(BACKENDS)}")
    if backend is not None and mechanism is not None and (mechanism == "jwt") != (backend == "jwt"):
        check.problem("mechanism", f"{mechanism} does not go with backend = {backend}")
    if backend is None:
        return None
    fields = {key: value for key, value in values.items() if key not in ("from", "server")}
    if "from" in values:
        fields["jwt_from"] = values["from"]
    if backend in HASHING_BACKENDS and check.value("password_hash_algorithm") == "pbkdf2":
        check.need("iterations", "pbkdf2 needs an iteration count")
    headers = _headers(check, backend, mappings.get(f"{SECTION}.headers", {}))
    {"http": _http, "jwt": _jwt}.get(backend, _database)(check, backend, mappings)
    if backend in DEFAULT_PORTS and "server" in values:
        host, port = values["server"]
        host = f"[{host}]" if ":" in host else host
        fields["server"] = f"{host}:{port or DEFAULT_PORTS[backend]}"
    if backend == "redis" and not values.get("database"):
        fields["database"] = "0"
    fields.update(
        backend=backend,
        mechanism="jwt" if backend == "jwt" else "password_based",
        headers=MappingProxyType(headers),
        **{
            name: MappingProxyType(dict(mappings.get(f"{SECTION}.{name}", {})))
            for name in ("body", "verify_claims", "filter")
        },
    )
    return AuthenticationSection(**fields)


def _headers(check: _Check, backend: str, given: Mapping[str, str]) -> dict[str, str]:
    """The HTTP headers: for post, merged over ``content-type: application/json``."""
    section = f"{SECTION}.headers"
    if backend != "http":
        return dict(given)
    if check.value("method") == "get":
        if "content-type" in given:
            check.problem("content-type", "a get request has no body; remove content-type", section)
        return dict(given)
    headers = {"content-type": "application/json", **given}
    content_type = headers["content-type"].split(";")[0].strip().lower()
    if content_type not in POST_CONTENT_TYPES:
        shown = v.got(headers["content-type"])
        check.problem("content-type", f"expected one of {', '.join(POST_CONTENT_TYPES)}, {shown}", section)
    return headers


def _tls(check: _Check) -> None:
    for key in ("ssl_cacertfile", "ssl_certfile", "ssl_keyfile"):
        check.readable(key, "the PEM file")
    for key, other in (("ssl_certfile", "ssl_keyfile"), ("ssl_keyfile", "ssl_certfile")):
        if check.given(key) and not check.given(other):
            check.problem(other, f"missing, expected the path of a PEM file (set with {key})")


def _http(check: _Check, backend: str, mappings: Mapping[str, dict[str, str]]) -> None:
    check.need("url", "expected the authentication server's http:// or https:// URL")
    _tls(check)


def _jwt(check: _Check, backend: str, mappings: Mapping[str, dict[str, str]]) -> None:
    if check.value("use_jwks"):
        check.need("endpoint", "use_jwks needs the JWKS URL")
        _tls(check)
    elif check.value("algorithm") == "hmac-based":
        check.need("secret", "hmac-based needs the shared secret")
        secret = check.values.get("secret")
        if secret and check.value("secret_base64_encoded"):
            try:
                base64.b64decode(secret, validate=True)
            except (binascii.Error, ValueError):
                check.problem("secret", "not valid base64 (secret_base64_encoded = true); not shown")
    else:
        check.need("public_key", "public-key needs the path of the PEM file of the public key")
        check.readable("public_key", "the public key")
    section = f"{SECTION}.verify_claims"
    for claim, template in mappings.get(section, {}).items():
        names = set(PLACEHOLDER.findall(template)) - CLAIM_PLACEHOLDERS
        if names:
            listed = ", ".join(f"${{{name}}}" for name in sorted(names))
            check.problem(
                claim, f"only ${{clientid}} and ${{username}} are filled in here, got {listed}", section
            )


def _database(check: _Check, backend: str, mappings: Mapping[str, dict[str, str]]) -> None:
    if backend == "built_in_database":
        return
    check.need("server", f"expected HOST:PORT of the {backend} server")
    _tls(check)
    if backend in ("postgresql", "mysql"):
        check.need("database", "expected the database name")
        check.need("query", "expected the SELECT that finds the user (password_hash, salt, is_superuser)")
    elif backend == "redis":
        database = check.values.get("database")
        if database and not re.fullmatch(r"[0-9]+", database):
            check.problem("database", f"expected a Redis database number, {v.got(database)}")
        check.need(
            "cmd",
            "expected HGET or HMGET, a key and fields, such as HMGET mqtt_user:${username} "
            "password_hash salt is_superuser",
        )
        cmd = check.values.get("cmd")
        if cmd:
            reason = _redis_cmd_problem(cmd)
            if reason is not None:
                check.problem("cmd", reason)
    else:
        check.need("database", "expected the database name")
        check.need("collection", "expected the collection of the users")
        for key in ("password_hash_field", "salt_field", "is_superuser_field"):
            if check.report.written(SECTION, key) and not check.values.get(key, "x"):
                check.problem(key, "must not be empty")


def _redis_cmd_problem(cmd: str) -> str | None:
    """Why ``cmd`` is not a command the reference allows, or None."""
    words = cmd.split()
    if words[0].upper() not in ("HGET", "HMGET"):
        return f"expected HGET or HMGET, {v.got(words[0])}"
    if len(words) < 3:
        return f"expected {words[0].upper()} KEY FIELD..., {v.got(cmd)}"
    fields = words[2:]
    unknown = [name for name in fields if name not in REDIS_FIELDS]
    if unknown:
        return f"unknown fields {', '.join(unknown)}; expected among {', '.join(REDIS_FIELDS)}"
    if "password_hash" not in fields and "password" not in fields:
        return "needs the field password_hash or password"
    if words[0].upper() == "HGET" and len(fields) != 1:
        return "HGET takes one field; use HMGET for several"
    return None
