"""``backend = jwt``: the charge point's password (or username) is a JSON Web Token.

Verified with PyJWT against an HMAC secret, a public key (PEM file) or the keys of a JWKS endpoint.
Only the algorithms of the configured family are accepted (``alg: none`` never is): HS256/384/512;
RS/PS 256/384/512 for RSA keys, ES256/384/512 for the matching EC curve, EdDSA for Ed25519/Ed448.
``exp`` (``now < exp``) and ``nbf`` (``nbf <= now``) are checked on the reactor's clock with no
leeway, a numeric string counting as its number; ``iat`` is ignored (as the reference).
``[authentication.verify_claims]`` values are templates of ``${clientid}``/``${username}`` only (any
other ``${...}`` stays literal, A.0); a claim must be present and the very same string; ``aud`` may
be an array that contains it. ``is_superuser`` is the claim of that name through ``to_bool``.

Outcomes (issue 10): a token that fails verification (malformed, signature, no key for its
``kid``/``alg``, expired, not yet valid, a claim missing or different) is DENY ``not_authorized``.
No token is DENY ``not_authorized`` too: the reference's ``on_missing_jwt = deny``, whose
``bad_username_or_password`` the issue's "deny" reading makes ``not_authorized``. JWKS keys not
fetched yet, or dropped, is UNAVAILABLE.

JWKS: fetched with treq at ``start()`` and every ``refresh_interval`` (at least 10 s) on the
reactor's clock, never on the handshake's path; a failed fetch is retried after
``min(10 s, refresh_interval)``. The keys of the last good fetch are served until
``5 x refresh_interval`` have passed since it (the reference's five failed refreshes), then dropped.
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.warnings import InsecureKeyLengthWarning
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ocppgw.auth.common import BackendConfigError, WebClient, to_bool
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Credentials, Decision, IAuthenticator

log = Logger()

HMAC = frozenset({"HS256", "HS384", "HS512"})
RSA = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
MIN_REFRESH = 10.0
MAX_RETRY = 10.0
KEEP_REFRESHES = 5  # cached JWKS keys outlive this many refresh intervals without a good fetch
# Claims are checked here, on the reactor's clock; PyJWT checks the signature and the JSON only.
_DECODE_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}
_CLAIM_PLACEHOLDER = re.compile(r"\$\{(clientid|username)\}")
_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")


@dataclass(frozen=True)
class Key:
    """A verification key and the algorithms it may verify; ``kid`` from a JWKS."""

    key: Any
    algorithms: frozenset[str]
    kid: str | None = None


def public_key_algorithms(key: Any) -> frozenset[str]:
    """The algorithms a public key verifies: its family, an EC key's own curve only."""
    if isinstance(key, rsa.RSAPublicKey):
        return RSA
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_CURVES.get(key.curve.name)
        return frozenset({alg}) if alg else frozenset()
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def _secret(section: AuthenticationSection) -> bytes:
    if not section.secret:
        raise BackendConfigError("secret", "is required for algorithm = hmac-based")
    if not section.secret_base64_encoded:
        return section.secret.encode("utf-8")
    try:
        return base64.b64decode(section.secret, validate=True)
    except (binascii.Error, ValueError):
        raise BackendConfigError("secret", "is not base64 (secret_base64_encoded = true)") from None


def _public_key(path: Path | None) -> Key:
    if path is None:
        raise BackendConfigError("public_key", "is required for algorithm = public-key")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BackendConfigError("public_key", f"cannot read {path}: {e.strerror or e}") from None
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            key = x509.load_pem_x509_certificate(data).public_key()
        except ValueError:
            raise BackendConfigError("public_key", f"no PEM public key or certificate in {path}") from None
    algorithms = public_key_algorithms(key)
    if not algorithms:
        raise BackendConfigError("public_key", f"{type(key).__name__} is not an RSA, EC or EdDSA key")
    return Key(key, algorithms)


class JwksKeys:
    """The keys of a JWKS endpoint, fetched off the handshake path and refreshed on ``clock``."""

    def __init__(self, section: AuthenticationSection, reactor: Any, clock: Any = None) -> None:
        if not section.endpoint.lower().startswith(("http://", "https://")):
            raise BackendConfigError("endpoint", "must be an http:// or https:// URL")
        self._endpoint = section.endpoint.encode("ascii")
        self._clock = clock if clock is not None else reactor
        self._client = WebClient(section, reactor, clock, connections=1)
        self.interval = max(MIN_REFRESH, section.refresh_interval)
        self.retry = min(MAX_RETRY, self.interval)
        self._keys: list[Key] | None = None
        self._fetched_at = 0.0
        self._next: Any = None
        self._running: Deferred[Any] | None = None
        self._stopped = False

    def start(self) -> None:
        self._stopped = False
        self._fetch()

    def stop(self) -> Deferred[None]:
        self._stopped = True
        if self._next is not None and self._next.active():
            self._next.cancel()
        if self._running is not None:
            self._running.cancel()
        return self._client.close()

    def keys(self) -> list[Key] | None:
        """The cached keys; None before the first good fetch and once they are too old."""
        age = self._clock.seconds() - self._fetched_at
        if self._keys is not None and age > KEEP_REFRESHES * self.interval:
            log.warn("jwks: keys from {endpoint} dropped: no good fetch for too long", endpoint=self._where())
            self._keys = None
        return self._keys

    def _where(self) -> str:
        return self._endpoint.decode("ascii").split("?", 1)[0]

    def _fetch(self) -> None:
        self._next = None
        d = self._client.fetch("GET", self._endpoint, {b"accept": [b"application/json"]}, None)
        self._running = d
        d.addCallback(_parse_jwks)
        d.addCallbacks(self._fetched, self._failed)
        d.addErrback(lambda f: log.failure("jwks: refresh not scheduled", f))

    def _fetched(self, keys: list[Key]) -> None:
        self._running = None
        self._keys = keys
        self._fetched_at = self._clock.seconds()
        log.info("jwks: {count} keys from {endpoint}, kid {kids}", count=len(keys), endpoint=self._where(),
                 kids=[k.kid for k in keys])  # fmt: skip
        self._schedule(self.interval)

    def _failed(self, failure: Failure) -> None:
        self._running = None
        if self._stopped:
            return
        log.warn("jwks: fetching {endpoint} failed: {why}", endpoint=self._where(), why=_why(failure))
        self._schedule(self.retry)

    def _schedule(self, delay: float) -> None:
        if not self._stopped:
            self._next = self._clock.callLater(delay, self._fetch)


def _why(failure: Failure) -> str:
    return str(failure.value) if isinstance(failure.value, ValueError) else failure.type.__name__


def _parse_jwks(response: tuple[int, str, bytes]) -> list[Key]:
    """The usable signature keys of a JWKS document; ValueError when there is none."""
    status, _kind, body = response
    if status != 200:
        raise ValueError(f"status {status}")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError('no "keys" array')
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") == "oct":
            continue
        try:
            key = jwt.PyJWK(entry).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue  # a key type or algorithm PyJWT does not know: not usable here
        public = key.public_key() if hasattr(key, "public_key") else key
        algorithms = public_key_algorithms(public)
        if "alg" in entry:
            algorithms &= {entry["alg"]}
        kid = entry.get("kid")
        if algorithms:
            keys.append(Key(public, algorithms, kid if isinstance(kid, str) else None))
    if not keys:
        raise ValueError("no usable signature key")
    return keys


class _StaticKeys:
    def __init__(self, key: Key) -> None:
        self._keys = [key]

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def keys(self) -> list[Key] | None:
        return self._keys


class _Refused(Exception):
    """The token does not verify; the message says why, for the log (never the token)."""


@implementer(IAuthenticator)
class JwtAuthenticator:
    """Verifies the token a charge point presents; see the module docstring."""

    def __init__(self, section: AuthenticationSection, keys: Any, clock: Any) -> None:
        if section.jwt_from not in ("password", "username"):
            raise BackendConfigError("from", "must be password or username")
        self._from_password = section.jwt_from == "password"
        self._source = keys
        self._clock = clock
        self._claims = dict(section.verify_claims)
        self._decoder = jwt.PyJWT()

    def start(self) -> None:
        self._source.start()

    def stop(self) -> Deferred[None]:
        return self._source.stop()

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        try:
            return succeed(self._decide(credentials))
        except Exception as e:  # a bug must not become a failed Deferred
            log.failure("jwt auth for {cid}: not decided", cid=credentials.cid)
            return succeed(Decision.unavailable(f"jwt: {type(e).__name__}"))

    def _decide(self, credentials: Credentials) -> Decision:
        raw = credentials.password if self._from_password else credentials.username
        if not raw:
            log.info("jwt auth for {cid}: no token", cid=credentials.cid)
            return Decision.deny("not_authorized")
        keys = self._source.keys()
        if keys is None:
            return Decision.unavailable("jwt: no JWKS keys fetched")
        alg = kid = None
        try:
            token = raw.decode("ascii") if isinstance(raw, bytes) else raw
            header = jwt.get_unverified_header(token)
            alg, kid = header.get("alg"), header.get("kid")
            claims = self._verified(token, alg, kid, keys)
            self._check_times(claims)
            self._check_claims(claims, credentials)
        except (_Refused, jwt.PyJWTError, UnicodeError) as e:
            why = str(e) if isinstance(e, _Refused) else f"malformed ({type(e).__name__})"
            log.info("jwt auth for {cid}: {why} (alg {alg}, kid {kid})", cid=credentials.cid, why=why,
                     alg=_printable(alg), kid=_printable(kid))  # fmt: skip
            return Decision.deny("not_authorized")
        return Decision.allow(is_superuser=to_bool(claims.get("is_superuser")))

    def _verified(self, token: str, alg: Any, kid: Any, keys: list[Key]) -> dict[str, Any]:
        if not isinstance(alg, str) or not (kid is None or isinstance(kid, str)):
            raise _Refused("alg or kid is not a string")
        candidates = [
            k for k in keys if alg in k.algorithms and (kid is None or k.kid is None or k.kid == kid)
        ]
        if not candidates:
            raise _Refused("no key for this alg and kid")
        for key in candidates:
            try:
                with warnings.catch_warnings():  # a short HMAC secret is the operator's choice
                    warnings.simplefilter("ignore", InsecureKeyLengthWarning)
                    return self._decoder.decode(token, key.key, algorithms=[alg], options=_DECODE_OPTIONS)
            except jwt.InvalidSignatureError:
                continue
        raise _Refused("signature does not verify")

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._clock.seconds()
        if "exp" in claims:
            exp = _number(claims["exp"])
            if exp is None or not now < exp:
                raise _Refused("expired (exp)")
        if "nbf" in claims:
            nbf = _number(claims["nbf"])
            if nbf is None or not nbf <= now:
                raise _Refused("not valid yet (nbf)")

    def _check_claims(self, claims: Mapping[str, Any], credentials: Credentials) -> None:
        values = {"clientid": credentials.cid, "username": credentials.username or ""}
        for name, template in self._claims.items():
            expected = _CLAIM_PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
            actual = claims.get(name)
            if name == "aud" and isinstance(actual, list):
                matches = expected in [a for a in actual if isinstance(a, str)]
            else:
                matches = isinstance(actual, str) and actual == expected
            if not matches:
                raise _Refused(f"claim {name} missing or different")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value)
    return None


def _printable(value: Any) -> str | None:
    """A header value fit for a log line: short, and only if it is a string."""
    return value[:64] if isinstance(value, str) else None


def make(section: AuthenticationSection, reactor: Any, data_dir: Path, clock: Any = None) -> JwtAuthenticator:
    """The ``jwt`` backend; ``BackendConfigError`` when its settings cannot be used. ``clock`` (the
    reactor by default) times ``exp``/``nbf`` and the JWKS refreshes."""
    clock = clock if clock is not None else reactor
    keys: Any
    if section.use_jwks:
        keys = JwksKeys(section, reactor, clock)
    elif section.algorithm == "hmac-based":
        keys = _StaticKeys(Key(_secret(section), HMAC))
    elif section.algorithm == "public-key":
        keys = _StaticKeys(_public_key(section.public_key))
    else:
        raise BackendConfigError("algorithm", "must be hmac-based or public-key")
    return JwtAuthenticator(section, keys, clock)

