"""``backend = http`` against a real Twisted Web server on a free port: every response row of the
reference's table (A.3) and its HTTP behaviour vectors (A.9), GET and POST, headers, TLS with the
development PKI, timeouts driven by a ``Clock``, a server that stops and comes back."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet import reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from ocppgw.auth import http
from ocppgw.auth.common import BackendConfigError
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Credentials, Decision, Outcome
from tests.authserver import AuthServer, Reply
from tests.devpki import make_dev_certs
from tests.support import poll_until

CP = Credentials("CP/1", "10.0.0.5:4711", "ws.default", username="user one", password=b"s3cret")


def section(**fields: Any) -> AuthenticationSection:
    for name in ("headers", "body"):
        if name in fields:
            fields[name] = MappingProxyType(fields[name])
    fields.setdefault("body", MappingProxyType({"clientid": "${clientid}", "password": "${password}"}))
    return AuthenticationSection(backend="http", **fields)


class HttpCase(TestCase):
    def setUp(self) -> None:
        self.server = AuthServer()
        self.server.start()
        self.addCleanup(self.server.stop)
        self.clock = Clock()

    def backend(self, **fields: Any) -> http.HttpAuthenticator:
        fields.setdefault("url", self.server.url())
        authenticator = http.HttpAuthenticator(section(**fields), reactor, self.clock)
        authenticator.start()
        self.addCleanup(authenticator.stop)
        return authenticator

    @inlineCallbacks
    def ask(self, reply: Reply, credentials: Credentials = CP, **fields: Any) -> Any:
        self.server.reply = reply
        decision = yield self.backend(**fields).authenticate(credentials)
        return decision


def json_reply(body: Any, status: int = 200) -> Reply:
    return Reply(status, body=json.dumps(body).encode())


class ResponseTests(HttpCase):
    """A.3's response table and A.9's behaviour vectors, with the issue's mapping: any other status
    or body is "ignore" (401 not_authorized)."""

    @inlineCallbacks
    def test_204_allows_without_a_body(self) -> Any:
        """204 allows, not as a superuser, whatever the body."""
        decision = yield self.ask(Reply(204, headers={}, body=b""))
        self.assertEqual(decision, Decision.allow())

    @inlineCallbacks
    def test_200_json_results(self) -> Any:
        """allow / deny / ignore / no result / another value, each as the reference says."""
        cases = [
            ({"result": "allow", "is_superuser": False}, Decision.allow()),
            ({"result": "allow"}, Decision.allow()),
            ({"result": "deny"}, Decision.deny("not_authorized")),
            ({"result": "ignore"}, Decision.ignore()),
            ({}, Decision.ignore()),
            ({"result": "ALLOW"}, Decision.ignore()),
            ({"result": True}, Decision.ignore()),
            (["allow"], Decision.ignore()),
        ]
        for body, expected in cases:
            decision = yield self.ask(json_reply(body))
            self.assertEqual(decision, expected, body)

    @inlineCallbacks
    def test_is_superuser_follows_to_bool(self) -> Any:
        """is_superuser: true, "true", 1, "1", "2" make a superuser; "TRUE", "yes", 0, 1.0, null do not."""
        for flag, expected in [
            (True, True), ("true", True), (1, True), ("1", True), ("2", True),
            ("TRUE", False), ("yes", False), (0, False), (1.0, False), (None, False), ("", False),
        ]:  # fmt: skip
            decision = yield self.ask(json_reply({"result": "allow", "is_superuser": flag}))
            self.assertEqual(decision, Decision.allow(is_superuser=expected), flag)

    @inlineCallbacks
    def test_200_form_answer(self) -> Any:
        """A form-encoded 200 answers as JSON does; its values are strings."""
        form = {b"content-type": b"application/x-www-form-urlencoded; charset=utf-8"}
        decision = yield self.ask(Reply(200, headers=form, body=b"result=allow&is_superuser=1"))
        self.assertEqual(decision, Decision.allow(is_superuser=True))
        decision = yield self.ask(Reply(200, headers=form, body=b"result=deny"))
        self.assertEqual(decision, Decision.deny("not_authorized"))
        decision = yield self.ask(Reply(200, headers=form, body=b"is_superuser=1"))
        self.assertEqual(decision, Decision.ignore())

    @inlineCallbacks
    def test_other_bodies_and_statuses_are_ignore(self) -> Any:
        """text/plain, no content-type, no body, bad JSON, 3xx/400/500 and a crashing handler: ignore."""
        allow = b'{"result": "allow"}'
        for reply in [
            Reply(200, headers={b"content-type": b"text/plain"}, body=allow),
            Reply(200, headers={b"content-type": b""}, body=allow),
            Reply(200, body=b""),
            Reply(200, body=b"{not json"),
            Reply(302, headers={b"location": b"/elsewhere"}, body=allow),
            Reply(400, body=allow),
            Reply(401, body=allow),
            Reply(500, body=allow),
            Reply(crash=True),
        ]:
            decision = yield self.ask(reply)
            self.assertEqual(decision, Decision.ignore(), reply)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class RequestTests(HttpCase):
    """What the server receives: method, URL, headers, body."""

    @inlineCallbacks
    def test_post_json_body_of_rendered_strings(self) -> Any:
        """POST sends the body templates rendered, as a JSON object, content-type application/json;
        a missing password renders as an empty string and the request is still made."""
        body = {"c": "${clientid}", "u": "${username}", "p": "${password}", "h": "${peerhost}", "k": "x"}
        yield self.ask(Reply(204), body=body)
        seen = self.server.seen[-1]
        self.assertEqual(seen.method, b"POST")
        self.assertEqual(seen.headers[b"content-type"], b"application/json")
        self.assertEqual(
            json.loads(seen.body), {"c": "CP/1", "u": "user one", "p": "s3cret", "h": "10.0.0.5", "k": "x"}
        )
        anonymous = Credentials("CP2", "127.0.0.1:1", "ws.default")
        decision = yield self.ask(Reply(204), anonymous, body=body)
        self.assertEqual(decision, Decision.allow())
        self.assertEqual(json.loads(self.server.seen[-1].body)["p"], "")

    @inlineCallbacks
    def test_post_json_with_a_non_utf8_password_is_not_authorized(self) -> Any:
        """A.9: a JSON body cannot carry a non-UTF-8 password: not_authorized, the server not asked."""
        binary = Credentials("CP1", "127.0.0.1:1", "ws.default", "u", b"\xff\xfe")
        decision = yield self.ask(Reply(204), binary)
        self.assertEqual(decision, Decision.ignore())
        self.assertEqual(decision.reason, "not_authorized")
        self.assertEqual(self.server.seen, [])

    @inlineCallbacks
    def test_post_form_passes_non_utf8_bytes_through(self) -> Any:
        """A.9: a form body carries the password's bytes percent-encoded, and the answer counts."""
        binary = Credentials("CP1", "127.0.0.1:1", "ws.default", "u", b"\xff\xfe")
        form = {"content-type": "application/x-www-form-urlencoded"}
        decision = yield self.ask(Reply(204), binary, headers=form)
        self.assertEqual(decision, Decision.allow())
        seen = self.server.seen[-1]
        self.assertEqual(seen.headers[b"content-type"], b"application/x-www-form-urlencoded")
        self.assertEqual(seen.body, b"clientid=CP1&password=%FF%FE")

    @inlineCallbacks
    def test_get_appends_the_body_to_the_query(self) -> Any:
        """GET: placeholders in path and query URL-encoded, the body after the URL's own query, no
        content-type and no body."""
        url = self.server.url("/auth/${clientid}?realm=a%20b&who=${username}")
        yield self.ask(Reply(204), method="get", url=url)
        seen = self.server.seen[-1]
        self.assertEqual(seen.method, b"GET")
        self.assertNotIn(b"content-type", seen.headers)
        self.assertEqual(seen.body, b"")
        parts = urlsplit(seen.uri.decode("ascii"))
        self.assertEqual(parts.path, "/auth/CP%2F1")
        self.assertEqual(
            parse_qs(parts.query),
            {"realm": ["a b"], "who": ["user one"], "clientid": ["CP/1"], "password": ["s3cret"]},
        )

    @inlineCallbacks
    def test_get_passes_non_utf8_bytes_through(self) -> Any:
        """GET: a non-UTF-8 password goes into the query percent-encoded, byte for byte."""
        binary = Credentials("CP1", "127.0.0.1:1", "ws.default", "u", b"\xff\xfe")
        decision = yield self.ask(Reply(204), binary, method="get", url=self.server.url("/a/${password}"))
        self.assertEqual(decision, Decision.allow())
        self.assertEqual(self.server.seen[-1].uri, b"/a/%FF%FE?clientid=CP1&password=%FF%FE")

    @inlineCallbacks
    def test_headers_rendered_raw_over_the_defaults(self) -> Any:
        """Configured headers (names in any case) render raw and override the default content-type."""
        headers = {"X-Station": "${clientid}", "Content-Type": "application/json; charset=utf-8"}
        yield self.ask(Reply(204), headers=headers)
        seen = self.server.seen[-1]
        self.assertEqual(seen.headers[b"x-station"], b"CP/1")
        self.assertEqual(seen.headers[b"content-type"], b"application/json; charset=utf-8")
        self.assertEqual(seen.headers[b"accept"], b"application/json")

    @inlineCallbacks
    def test_header_injection_is_refused(self) -> Any:
        """A username with CR/LF rendered into a header: not asked, not_authorized."""
        evil = Credentials("CP1", "127.0.0.1:1", "ws.default", "u\r\nX-Admin: 1", b"p")
        decision = yield self.ask(Reply(204), evil, headers={"x-user": "${username}"})
        self.assertEqual(decision, Decision.ignore())
        self.assertEqual(self.server.seen, [])

    def test_bad_settings_are_refused_at_construction(self) -> None:
        """A POST content-type with no body format, a method or URL that is not HTTP: BackendConfigError."""
        for fields, key in [
            ({"headers": {"content-type": "text/plain"}}, "headers"),
            ({"method": "put"}, "method"),
            ({"url": "ftp://127.0.0.1/auth"}, "url"),
            ({"url": "http:///auth"}, "url"),
        ]:
            with self.assertRaises(BackendConfigError) as caught:
                self.backend(**fields)
            self.assertEqual(caught.exception.key, key)


class AvailabilityTests(HttpCase):
    """No response is UNAVAILABLE; the next handshake after the server is back gets in."""

    @inlineCallbacks
    def test_timeout_is_unavailable_within_request_timeout(self) -> Any:
        """A server that never answers: UNAVAILABLE once request_timeout has passed, not before."""
        self.server.reply = Reply(hang=True)
        d = self.backend(request_timeout=2.0).authenticate(CP)
        yield poll_until(lambda: self.server.hanging, timeout=10)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        decision = self.successResultOf(d)
        self.assertEqual(decision.outcome, Outcome.UNAVAILABLE)

    @inlineCallbacks
    def test_server_stopped_then_back(self) -> Any:
        """Refused while stopped (kept-alive connection dropped too), allowed when back on its port."""
        self.server.reply = Reply(204)
        backend = self.backend()
        decision = yield backend.authenticate(CP)
        self.assertEqual(decision, Decision.allow())
        yield self.server.stop()
        decision = yield backend.authenticate(CP)
        self.assertEqual(decision.outcome, Outcome.UNAVAILABLE)
        self.assertNotIn("s3cret", decision.reason)
        self.server.start()
        decision = yield backend.authenticate(CP)
        self.assertEqual(decision, Decision.allow())

    @inlineCallbacks
    def test_a_dropped_connection_is_tried_once_more(self) -> Any:
        """The connection dropped once with no answer (a kept-alive connection closing as the request
        went out): asked once more and answered; dropped twice: UNAVAILABLE."""
        self.server.reply = Reply(204)
        backend = self.backend()
        self.server.drop = 1
        decision = yield backend.authenticate(CP)
        self.assertEqual(decision, Decision.allow())
        self.assertEqual(len(self.server.seen), 2)
        self.server.drop = 2
        decision = yield backend.authenticate(CP)
        self.assertEqual(decision.outcome, Outcome.UNAVAILABLE)

    @inlineCallbacks
    def test_connections_are_bounded(self) -> Any:
        """pool_size = 2: a third request waits for a connection, inside its own timeout."""
        self.server.reply = Reply(hang=True)
        backend = self.backend(pool_size=2, request_timeout=5.0)
        pending = [backend.authenticate(CP) for _ in range(3)]
        yield poll_until(lambda: len(self.server.hanging) == 2, timeout=10)
        self.assertEqual(len(self.server.connections), 2)
        self.clock.advance(5.0)
        for d in pending:
            self.assertEqual(self.successResultOf(d).outcome, Outcome.UNAVAILABLE)


class TlsTests(HttpCase):
    """https with the development PKI: verified, unverifiable, verification off, client certificate."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.pki = make_dev_certs(Path(self.mktemp()), ["cp1"])
        server = ssl.PrivateCertificate.loadPEM(
            self.pki.server_cert.read_bytes() + self.pki.server_key.read_bytes()
        )
        self.server = AuthServer()
        self.server.start(tls=server.options())
        self.addCleanup(self.server.stop)

    @inlineCallbacks
    def test_verified_server(self) -> Any:
        """ssl_cacertfile names the CA that signed the server: allowed (by IP and by name)."""
        decision = yield self.ask(Reply(204), ssl_cacertfile=self.pki.ca_cert)
        self.assertEqual(decision, Decision.allow())
        url = self.server.url(host="localhost")
        decision = yield self.ask(Reply(204), ssl_cacertfile=self.pki.ca_cert, url=url)
        self.assertEqual(decision, Decision.allow())

    @inlineCallbacks
    def test_unverifiable_server_is_unavailable(self) -> Any:
        """Another CA: the TLS handshake fails, UNAVAILABLE; with ssl_verify = false: allowed."""
        other = make_dev_certs(Path(self.mktemp()), ca_name="another CA")
        decision = yield self.ask(Reply(204), ssl_cacertfile=other.ca_cert)
        self.assertEqual(decision.outcome, Outcome.UNAVAILABLE)
        decision = yield self.ask(Reply(204), ssl_cacertfile=other.ca_cert, ssl_verify=False)
        self.assertEqual(decision, Decision.allow())

    @inlineCallbacks
    def test_client_certificate(self) -> Any:
        """A server that requires a client certificate: ssl_certfile/ssl_keyfile present one."""
        yield self.server.stop()
        ca = ssl.Certificate.loadPEM(self.pki.ca_cert.read_bytes())
        pem = self.pki.server_cert.read_bytes() + self.pki.server_key.read_bytes()
        server = ssl.PrivateCertificate.loadPEM(pem)
        self.server.start(tls=server.options(ca))
        tls = {"ssl_cacertfile": self.pki.ca_cert}
        decision = yield self.ask(Reply(204), **tls)
        self.assertEqual(decision.outcome, Outcome.UNAVAILABLE)
        client = {"ssl_certfile": self.pki.client_certs["cp1"], "ssl_keyfile": self.pki.client_keys["cp1"]}
        decision = yield self.ask(Reply(204), **tls, **client)
        self.assertEqual(decision, Decision.allow())

    def test_unreadable_files_are_refused_at_construction(self) -> None:
        """A missing CA file names ssl_cacertfile; a certificate without a key names ssl_certfile."""
        with self.assertRaises(BackendConfigError) as caught:
            self.backend(ssl_cacertfile=Path(self.mktemp()))
        self.assertEqual(caught.exception.key, "ssl_cacertfile")
        with self.assertRaises(BackendConfigError) as caught:
            self.backend(ssl_certfile=self.pki.server_cert)
        self.assertEqual(caught.exception.key, "ssl_certfile")
