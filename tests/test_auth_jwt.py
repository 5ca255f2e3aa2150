"""``backend = jwt``: the reference's JWT vectors (A.9), each algorithm family with keys made here,
claims, and a JWKS endpoint served by a real Twisted Web server (rotation, down at start, back)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from ocppgw.auth import jwt as jwt_backend
from ocppgw.auth.common import BackendConfigError
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Credentials, Decision, Outcome
from tests.authserver import AuthServer, Reply
from tests.devpki import make_dev_certs
from tests.support import poll_until

NOW = 1_700_000_000.0
DENIED = Decision.deny("not_authorized")
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def encode(claims: dict[str, Any], key: Any, algorithm: str, **kwargs: Any) -> str:
    """A signed token; short test secrets are meant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(claims, key, algorithm=algorithm, **kwargs)


def section(**fields: Any) -> AuthenticationSection:
    if "verify_claims" in fields:
        fields["verify_claims"] = MappingProxyType(fields["verify_claims"])
    return AuthenticationSection(backend="jwt", mechanism="jwt", **fields)


def token_for(username: str, token: str, cid: str = "CP1") -> Credentials:
    return Credentials(cid, "127.0.0.1:1", "ws.default", username, token.encode("ascii"))


class JwtCase(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)

    def backend(self, **fields: Any) -> jwt_backend.JwtAuthenticator:
        authenticator = jwt_backend.make(section(**fields), reactor, Path("."), self.clock)
        authenticator.start()
        self.addCleanup(authenticator.stop)
        return authenticator

    def decide(self, backend: jwt_backend.JwtAuthenticator, credentials: Credentials) -> Decision:
        return self.successResultOf(backend.authenticate(credentials))

    def public_key_file(self, private: Any) -> Path:
        path = Path(self.mktemp())
        pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        path.write_bytes(pem)
        return path


class HmacTests(JwtCase):
    """A.9 ``t_hmac_based``: HS256, secret ``abcdef``, verify_claims username = ${username}."""

    def setUp(self) -> None:
        super().setUp()
        self.hmac = self.backend(secret="abcdef", verify_claims={"username": "${username}"})

    def sign(self, claims: dict[str, Any], key: Any = "abcdef", algorithm: str = "HS256") -> str:
        return encode(claims, key, algorithm=algorithm)

    def test_reference_vectors(self) -> None:
        """Matching username allowed; other username, expired, nbf ahead denied; iat ahead ignored."""
        for claims, username, expected in [
            ({"username": "u1", "exp": NOW + 60}, "u1", Decision.allow()),
            ({"username": "u1", "exp": NOW + 60}, "u2", DENIED),
            ({"username": "u1", "exp": NOW - 60}, "u1", DENIED),
            ({"username": "u1", "iat": NOW + 60}, "u1", Decision.allow()),
            ({"username": "u1", "nbf": NOW + 60}, "u1", DENIED),
        ]:
            self.assertEqual(self.decide(self.hmac, token_for(username, self.sign(claims))), expected, claims)

    def test_bad_signatures_and_algorithms_are_denied(self) -> None:
        """Wrong secret, alg none, an RS256 token on an HMAC config: not_authorized."""
        claims = {"username": "u1"}
        for token in [
            self.sign(claims, "wrong"),
            encode(claims, None, algorithm="none"),
            self.sign(claims, RSA_KEY, "RS256"),
            self.sign(claims)[:-2] + "AA",
        ]:
            self.assertEqual(self.decide(self.hmac, token_for("u1", token)), DENIED, token)

    def test_no_token_and_malformed_tokens_are_denied(self) -> None:
        """No password, an empty one, not a JWT, not ASCII, a JSON array payload: not_authorized."""
        anonymous = Credentials("CP1", "127.0.0.1:1", "ws.default", "u1")
        self.assertEqual(self.decide(self.hmac, anonymous), DENIED)
        for password in [b"", b"not.a.jwt", b"\xff\xfe", b"a.b", b"eyJhbGciOiJIUzI1NiJ9.W10.x"]:
            credentials = Credentials("CP1", "127.0.0.1:1", "ws.default", "u1", password)
            self.assertEqual(self.decide(self.hmac, credentials), DENIED, password)

    def test_time_claims_have_no_leeway(self) -> None:
        """exp == now is expired; nbf == now is valid; a numeric string counts; text does not."""
        for claims, expected in [
            ({"username": "u1", "exp": NOW}, DENIED),
            ({"username": "u1", "exp": NOW + 1}, Decision.allow()),
            ({"username": "u1", "nbf": NOW}, Decision.allow()),
            ({"username": "u1", "nbf": NOW + 1}, DENIED),
            ({"username": "u1", "exp": str(int(NOW) + 60)}, Decision.allow()),
            ({"username": "u1", "exp": str(int(NOW) - 60)}, DENIED),
            ({"username": "u1", "exp": "tomorrow"}, DENIED),
            ({"username": "u1", "exp": True}, DENIED),
        ]:
            self.assertEqual(self.decide(self.hmac, token_for("u1", self.sign(claims))), expected, claims)
        token = self.sign({"username": "u1", "exp": NOW + 10})
        self.clock.advance(10)
        self.assertEqual(self.decide(self.hmac, token_for("u1", token)), DENIED)

    def test_is_superuser_claim(self) -> None:
        """is_superuser through to_bool: true, 1, "1" yes; "TRUE", 0, absent no."""
        for flag, expected in [(True, True), (1, True), ("1", True), ("TRUE", False), (0, False)]:
            token = self.sign({"username": "u1", "is_superuser": flag})
            self.assertEqual(self.decide(self.hmac, token_for("u1", token)), Decision.allow(expected), flag)

    def test_other_hmac_algorithms_and_base64_secret(self) -> None:
        """HS384 and HS512 verify; secret_base64_encoded decodes the secret first."""
        for algorithm in ("HS384", "HS512"):
            token = self.sign({"username": "u1"}, algorithm=algorithm)
            self.assertEqual(self.decide(self.hmac, token_for("u1", token)), Decision.allow())
        secret = bytes(range(48))
        encoded = self.backend(secret=base64.b64encode(secret).decode(), secret_base64_encoded=True)
        self.assertEqual(self.decide(encoded, token_for("u", self.sign({}, secret))), Decision.allow())
        self.assertEqual(self.decide(encoded, token_for("u", self.sign({}, "abcdef"))), DENIED)

    def test_token_from_the_username(self) -> None:
        """from = username: the token is the username; the password is not looked at."""
        backend = self.backend(secret="abcdef", jwt_from="username", verify_claims={"sub": "${clientid}"})
        token = self.sign({"sub": "CP7"})
        for credentials, expected in [
            (Credentials("CP7", "h:1", "ws.default", token), Decision.allow()),
            (Credentials("CP8", "h:1", "ws.default", token), DENIED),
            (Credentials("CP7", "h:1", "ws.default", None, token.encode()), DENIED),
        ]:
            self.assertEqual(self.decide(backend, credentials), expected)

    def test_bad_settings_are_refused(self) -> None:
        """No secret, a secret that is not base64, an unknown algorithm or from: BackendConfigError."""
        for fields, key in [
            ({}, "secret"),
            ({"secret": "not base64!", "secret_base64_encoded": True}, "secret"),
            ({"secret": "x", "algorithm": "rsa"}, "algorithm"),
            ({"secret": "x", "jwt_from": "header"}, "from"),
            ({"algorithm": "public-key", "public_key": Path("/nonexistent.pem")}, "public_key"),
        ]:
            with self.assertRaises(BackendConfigError) as caught:
                self.backend(**fields)
            self.assertEqual(caught.exception.key, key)


class ClaimTests(JwtCase):
    """verify_claims: exact strings, only ${clientid} and ${username} rendered, aud as a list."""

    def check(self, claims_config: dict[str, str], claims: dict[str, Any]) -> Decision:
        backend = self.backend(secret="abcdef", verify_claims=claims_config)
        return self.decide(backend, token_for("u1", encode(claims, "abcdef", algorithm="HS256")))

    def test_exact_strings(self) -> None:
        """A number never equals a string; a missing claim fails; other placeholders stay literal."""
        self.assertEqual(self.check({"n": "1"}, {"n": 1}), DENIED)
        self.assertEqual(self.check({"n": "1"}, {"n": "1"}), Decision.allow())
        self.assertEqual(self.check({"n": "1"}, {}), DENIED)
        self.assertEqual(self.check({"h": "${peerhost}"}, {"h": "127.0.0.1"}), DENIED)
        self.assertEqual(self.check({"h": "${peerhost}"}, {"h": "${peerhost}"}), Decision.allow())
        self.assertEqual(self.check({"c": "cp-${clientid}"}, {"c": "cp-CP1"}), Decision.allow())

    def test_audience(self) -> None:
        """aud: a string must equal, an array must contain, an empty array fails."""
        expected = {"aud": "${clientid}"}
        self.assertEqual(self.check(expected, {"aud": "CP1"}), Decision.allow())
        self.assertEqual(self.check(expected, {"aud": ["x", "CP1"]}), Decision.allow())
        self.assertEqual(self.check(expected, {"aud": ["x"]}), DENIED)
        self.assertEqual(self.check(expected, {"aud": []}), DENIED)


class PublicKeyTests(JwtCase):
    """algorithm = public-key: each family verifies its own algorithms and nothing else."""

    def test_each_family(self) -> None:
        """RSA (RS, PS), EC P-256/384/521 (ES256/384/512), Ed25519 and Ed448 (EdDSA): own key
        allowed; another key of the same kind, another family or another curve denied."""
        cases = [
            (RSA_KEY, ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"], ["ES256", "HS256", "EdDSA"]),
            (ec.generate_private_key(ec.SECP256R1()), ["ES256"], ["ES384", "RS256"]),
            (ec.generate_private_key(ec.SECP384R1()), ["ES384"], ["ES256", "ES512"]),
            (ec.generate_private_key(ec.SECP521R1()), ["ES512"], ["ES384"]),
            (ed25519.Ed25519PrivateKey.generate(), ["EdDSA"], ["ES256", "HS512"]),
            (ed448.Ed448PrivateKey.generate(), ["EdDSA"], ["RS256"]),
        ]
        for private, good, bad in cases:
            backend = self.backend(algorithm="public-key", public_key=self.public_key_file(private))
            stranger = same_kind(private)
            for algorithm in good:
                token = encode({"sub": "x"}, private, algorithm=algorithm)
                self.assertEqual(self.decide(backend, token_for("u", token)), Decision.allow(), algorithm)
                token = encode({"sub": "x"}, stranger, algorithm=algorithm)
                self.assertEqual(self.decide(backend, token_for("u", token)), DENIED, algorithm)
            for algorithm in bad:
                token = encode({"sub": "x"}, signing_key(algorithm), algorithm=algorithm)
                self.assertEqual(self.decide(backend, token_for("u", token)), DENIED, algorithm)

    def test_public_key_from_a_certificate(self) -> None:
        """public_key may also be a PEM certificate: its key verifies (the dev PKI's server key)."""
        pki = make_dev_certs(Path(self.mktemp()))
        private = serialization.load_pem_private_key(pki.server_key.read_bytes(), None)
        backend = self.backend(algorithm="public-key", public_key=pki.server_cert)
        token = encode({"sub": "x"}, private, algorithm="ES256")
        self.assertEqual(self.decide(backend, token_for("u", token)), Decision.allow())

    def test_key_confusion_is_refused(self) -> None:
        """An HS256 token signed with the public key's PEM as its secret does not pass."""
        path = self.public_key_file(RSA_KEY)
        backend = self.backend(algorithm="public-key", public_key=path)
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        payload = base64.urlsafe_b64encode(b'{"sub":"x"}').rstrip(b"=")
        signature = hmac.new(path.read_bytes(), header + b"." + payload, hashlib.sha256).digest()
        token = b".".join([header, payload, base64.urlsafe_b64encode(signature).rstrip(b"=")])
        self.assertEqual(self.decide(backend, token_for("u", token.decode())), DENIED)


def same_kind(private: Any) -> Any:
    """Another private key of the same type (and curve)."""
    if isinstance(private, rsa.RSAPrivateKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return ec.generate_private_key(private.curve)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return ed25519.Ed25519PrivateKey.generate()
    return ed448.Ed448PrivateKey.generate()


def signing_key(algorithm: str) -> Any:
    """A key fit to sign with ``algorithm`` (for tokens that must be refused for their algorithm)."""
    if algorithm.startswith("HS"):
        return "a-secret-that-is-long-enough-for-hs512-and-then-some-more-bytes"
    if algorithm.startswith(("RS", "PS")):
        return RSA_KEY
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[algorithm]
    return ec.generate_private_key(curve)


def jwk(private: Any, kid: str) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        entry = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        entry = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        entry = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**entry, "kid": kid, "use": "sig"}


def jwks_reply(*entries: dict[str, Any]) -> Reply:
    return Reply(200, body=json.dumps({"keys": list(entries)}).encode())


class JwksTests(JwtCase):
    """use_jwks: keys fetched from a real HTTP server, refreshed on the clock, cached through failures."""

    def setUp(self) -> None:
        super().setUp()
        self.key_a = ec.generate_private_key(ec.SECP256R1())
        self.key_b = ed25519.Ed25519PrivateKey.generate()
        self.server = AuthServer()
        self.server.reply = jwks_reply(jwk(self.key_a, "a"))
        self.server.start()
        self.addCleanup(self.server.stop)

    def jwks(self, **fields: Any) -> jwt_backend.JwtAuthenticator:
        fields.setdefault("refresh_interval", 60.0)
        return self.backend(use_jwks=True, endpoint=self.server.url("/jwks"), **fields)

    def token(self, private: Any, kid: str, algorithm: str = "ES256") -> Credentials:
        return token_for("u", encode({"sub": "x"}, private, algorithm=algorithm, headers={"kid": kid}))

    @inlineCallbacks
    def test_rotation_is_picked_up_after_a_refresh(self) -> Any:
        """Key a verifies; the server rotates to key b; after refresh_interval b verifies, a does not."""
        backend = self.jwks()
        yield poll_until(lambda: self.decide(backend, self.token(self.key_a, "a")).allowed, timeout=10)
        self.assertEqual(self.server.seen[0].method, b"GET")
        self.server.reply = jwks_reply(jwk(self.key_b, "b"))
        self.clock.advance(59)
        self.assertEqual(len(self.server.seen), 1)
        self.clock.advance(1)
        b = self.token(self.key_b, "b", "EdDSA")
        yield poll_until(lambda: self.decide(backend, b).allowed, timeout=10)
        self.assertEqual(self.decide(backend, self.token(self.key_a, "a")), DENIED)

    @inlineCallbacks
    def test_kid_selects_the_key(self) -> Any:
        """Two keys: the token's kid picks one; an unknown kid is denied; no kid tries both."""
        self.server.reply = jwks_reply(jwk(self.key_a, "a"), jwk(RSA_KEY, "r"))
        backend = self.jwks()
        yield poll_until(lambda: self.decide(backend, self.token(self.key_a, "a")).allowed, timeout=10)
        self.assertEqual(self.decide(backend, self.token(RSA_KEY, "r", "RS256")), Decision.allow())
        self.assertEqual(self.decide(backend, self.token(RSA_KEY, "a", "RS256")), DENIED)
        self.assertEqual(self.decide(backend, self.token(self.key_a, "zzz")), DENIED)
        no_kid = token_for("u", encode({"sub": "x"}, RSA_KEY, algorithm="PS256"))
        self.assertEqual(self.decide(backend, no_kid), Decision.allow())

    @inlineCallbacks
    def test_endpoint_down_at_start_then_back(self) -> Any:
        """Nothing cached: UNAVAILABLE; the endpoint comes back: the next retry fetches, allowed."""
        yield self.server.stop()
        backend = self.jwks()
        token = self.token(self.key_a, "a")
        self.assertEqual(self.decide(backend, token).outcome, Outcome.UNAVAILABLE)
        yield poll_until(lambda: backend._source._next is not None, timeout=10)  # the retry is set
        self.server.start()
        self.assertEqual(self.decide(backend, token).outcome, Outcome.UNAVAILABLE)
        self.clock.advance(jwt_backend.MAX_RETRY)
        yield poll_until(lambda: self.decide(backend, token).allowed, timeout=10)

    @inlineCallbacks
    def test_cached_keys_outlive_failed_refreshes_for_a_while(self) -> Any:
        """A failing endpoint (500, garbage, down): the cached keys serve until 5 refresh intervals
        after the last good fetch, then UNAVAILABLE."""
        backend = self.jwks()
        token = self.token(self.key_a, "a")
        yield poll_until(lambda: self.decide(backend, token).allowed, timeout=10)
        for reply in [Reply(500), Reply(200, body=b"{}")]:
            self.server.reply = reply
            asked = len(self.server.seen) + 1
            self.clock.advance(60)
            yield poll_until(lambda: backend._source._next is not None and len(self.server.seen) == asked)  # noqa: B023
            self.assertEqual(self.decide(backend, token), Decision.allow())
        yield self.server.stop()
        self.clock.advance(5 * 60 - 2 * 60)
        self.assertEqual(self.decide(backend, token), Decision.allow())
        self.clock.advance(1)
        self.assertEqual(self.decide(backend, token).outcome, Outcome.UNAVAILABLE)

    def test_refresh_interval_has_a_floor(self) -> None:
        """refresh_interval below 10 s counts as 10 s (as the reference clamps it)."""
        backend = self.jwks(refresh_interval=1.0)
        self.assertEqual(backend._source.interval, 10.0)
