"""Authentication through the real gateway (issue 10, acceptance): real charge points and a real
broker, the built-in database filled by the real ``ocppgw users`` process, no ``[authentication]``
(everyone in, and the start-up warning on a public listener), cache_ttl, and MongoDB's closed port.

``ServerBackendScenario`` is what every backend with a server must do end to end; the backends
using it are in ``test_auth_backends.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from typing import Any

from ocpp.v16 import call
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.authserver import AuthServer, Reply
from tests.integration.harness import Client, GatewayHarness, basic_auth, run_cli
from tests.support import free_port

RIGHT = "s3cret-Pw"
TIMEOUT = 1.0  # request_timeout of every backend here
AUTH_TIMEOUT = f"request_timeout = {TIMEOUT:g}s\n"
UNAVAILABLE = (503, b"authentication_backend_unavailable")


@inlineCallbacks
def heartbeat(gw: GatewayHarness, client: Client, cid: str) -> Generator[Deferred[Any], Any, Any]:
    """One Heartbeat Call from ``client`` to the central system on MQTT and its CallResult back."""
    topic = f"ocpp/cp/{cid}"
    seen = len(gw.messages(topic))
    reply = client.call(call.Heartbeat())
    messages = yield gw.wait_messages(topic, seen + 1)
    unique_id = messages[seen]["UniqueId"]
    gw.publish(
        cid, {"MessageTypeId": 3, "UniqueId": unique_id, "Payload": {"currentTime": "2026-11-24T12:00:00Z"}}
    )
    result = yield reply
    return result


@inlineCallbacks
def users(testcase: TestCase, gw: GatewayHarness, *argv: str) -> Generator[Deferred[Any], Any, bytes]:
    """``ocppgw users --config gw.ini ARGV`` on ``gw``'s config (a real process), which must succeed;
    its standard output."""
    ini = os.path.abspath(testcase.mktemp())
    with open(ini, "w", encoding="utf-8") as f:
        f.write(gw.config_text)
    out, err, code = yield run_cli(ini, "users", *argv)
    testcase.assertEqual(code, 0, err)
    return out


class AuthCase(TestCase):
    """A gateway with ``authentication`` (gw.ini text) merged into the harness's config."""

    def gateway(self, authentication: str) -> Deferred[GatewayHarness]:
        self.gw = GatewayHarness(self, authentication)
        return self.gw.start().addCallback(lambda _: self.gw)

    @inlineCallbacks
    def connected(self, cid: str, password: str | bytes = RIGHT) -> Generator[Deferred[Any], Any, Client]:
        """``cid`` let in with ``password``, its BootNotification answered through MQTT."""
        client = yield self.gw.connect(cid, additional_headers=basic_auth(cid, password))
        result = yield self.gw.boot(client, cid)
        self.assertEqual(result.status, "Accepted")
        return client

    def assertRefused(self, answer: tuple[int, dict[str, str], bytes], status: int, body: bytes) -> None:
        """The handshake's answer: ``status`` and ``body``; a 401 asks for Basic credentials."""
        got_status, headers, got_body = answer
        self.assertEqual((got_status, got_body), (status, body))
        if status == 401:
            self.assertEqual(headers.get("www-authenticate"), 'Basic realm="ocppgw"')

    def refused(self, cid: str, password: str | bytes | None) -> Deferred[tuple[int, dict[str, str], bytes]]:
        headers = basic_auth(cid, password) if password is not None else {}
        return self.gw.refused(cid, additional_headers=headers)


class ServerBackendScenario:
    """Right password in; wrong one 401; unknown user 401 not_authorized; backend hung or stopped: 503
    within request_timeout + 1 s while an already-connected charge point keeps round-tripping; back:
    the next handshake in. A subclass says how its backend is set up, stopped and brought back; its
    users CP001 and CP002 have the password ``RIGHT``. Mixed into an ``AuthCase``."""

    wrong_reason = b"bad_username_or_password"

    def authentication(self) -> str:
        """The ``[authentication]`` section(s), request_timeout ``TIMEOUT``."""
        raise NotImplementedError

    def hang(self) -> Any:
        """The backend accepts requests and never answers."""
        raise NotImplementedError

    def go_down(self) -> Any:
        """The backend is gone: connections dropped, new ones refused."""
        raise NotImplementedError

    def come_back(self) -> Any:
        """The backend answers again."""
        raise NotImplementedError

    @inlineCallbacks
    def test_right_wrong_unknown(self) -> Generator[Deferred[Any], Any, None]:
        """Right password: in, BootNotification round trip; wrong password: 401 with the backend's
        reason; unknown user, and no credentials: 401 not_authorized."""
        yield self.gateway(self.authentication())
        yield self.connected("CP001")
        self.assertRefused((yield self.refused("CP001", "wrong")), 401, self.wrong_reason)
        self.assertRefused((yield self.refused("CP404", RIGHT)), 401, b"not_authorized")
        self.assertRefused((yield self.refused("CP002", None)), 401, b"not_authorized")

    @inlineCallbacks
    def test_down_then_back(self) -> Generator[Deferred[Any], Any, None]:
        """Backend hung, then stopped: each handshake 503 within request_timeout + 1 s, and CP001,
        connected before, round-trips Calls while the hung handshake waits; back: CP002 gets in."""
        yield self.gateway(self.authentication())
        client = yield self.connected("CP001")
        yield self.hang()
        answered: list[float] = []
        began = reactor.seconds()
        pending = self.refused("CP002", RIGHT)
        pending.addBoth(lambda result: answered.append(reactor.seconds()) or result)
        yield heartbeat(self.gw, client, "CP001")
        self.assertEqual(answered, [], "the round trip did not happen while the handshake waited")
        self.assertRefused((yield pending), *UNAVAILABLE)
        self.assertLess(answered[0] - began, TIMEOUT + 1)
        yield self.go_down()
        began = reactor.seconds()
        self.assertRefused((yield self.refused("CP002", RIGHT)), *UNAVAILABLE)
        self.assertLess(reactor.seconds() - began, TIMEOUT + 1)
        yield heartbeat(self.gw, client, "CP001")
        yield self.come_back()
        yield self.connected("CP002")
        yield heartbeat(self.gw, client, "CP001")


class BuiltInDatabaseTests(AuthCase):
    """built_in_database: users added, listed and deleted by the real ``ocppgw users`` process, in
    the SQLite file under the gateway's data_dir, seen by the running gateway at the next handshake."""

    def authentication(self) -> str:
        data_dir = os.path.abspath(self.mktemp())
        return (
            f"[gateway]\ndata_dir = {data_dir}\n[listeners.ws.default]\nbind = 0.0.0.0:0\n"
            "[authentication]\nbackend = built_in_database\nuser_id_type = clientid\n"
            "password_hash_algorithm = sha256\nsalt_position = suffix\n"
        )

    def users(self, *argv: str) -> Deferred[bytes]:
        return users(self, self.gw, *argv)

    @inlineCallbacks
    def test_cli_users_right_wrong_unknown(self) -> Generator[Deferred[Any], Any, None]:
        """A user the CLI added gets in with its password; a wrong one: 401 bad_username_or_password;
        unknown: 401 not_authorized. No start-up warning: authentication is on (listener 0.0.0.0)."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        yield self.gateway(self.authentication())
        self.assertEqual([e for e in events if "no [authentication]" in e.get("log_format", "")], [])
        yield self.users("add", "CP001", "--password", RIGHT)
        yield self.connected("CP001")
        self.assertRefused((yield self.refused("CP001", "wrong")), 401, b"bad_username_or_password")
        self.assertRefused((yield self.refused("CP404", RIGHT)), 401, b"not_authorized")
        self.assertRefused((yield self.refused("CP002", None)), 401, b"not_authorized")

    @inlineCallbacks
    def test_added_and_deleted_while_running(self) -> Generator[Deferred[Any], Any, None]:
        """Added by the CLI while the gateway runs: in at the next handshake; deleted: refused at the
        next, while a charge point already in keeps round-tripping."""
        yield self.gateway(self.authentication())
        yield self.users("add", "CP001", "--password", RIGHT)
        client = yield self.connected("CP001")
        self.assertRefused((yield self.refused("CP002", RIGHT)), 401, b"not_authorized")
        yield self.users("add", "CP002", "--password", "other")
        self.assertIn(b"CP002", (yield self.users("list")))
        second = yield self.connected("CP002", "other")
        yield second.close()
        yield self.users("delete", "CP002")
        self.assertRefused((yield self.refused("CP002", "other")), 401, b"not_authorized")
        yield heartbeat(self.gw, client, "CP001")


class NoAuthenticationTests(AuthCase):
    """No ``[authentication]``: everyone in; the start-up warning only for a public listener."""

    def warnings(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    @staticmethod
    def open_to_all(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if "no [authentication]" in e.get("log_format", "")]

    @inlineCallbacks
    def test_public_listener_warns_once(self) -> Generator[Deferred[Any], Any, None]:
        """A listener on 0.0.0.0 without [authentication]: one warning naming it; any password in."""
        events = self.warnings()
        yield self.gateway("[listeners.ws.default]\nbind = 0.0.0.0:0\n")
        (warning,) = self.open_to_all(events)
        self.assertEqual(warning["log_level"], LogLevel.warn)
        self.assertEqual(warning["listeners"], "ws.default")
        yield self.connected("CP001", "anything at all")

    @inlineCallbacks
    def test_loopback_no_warning_everyone_in(self) -> Generator[Deferred[Any], Any, None]:
        """On loopback no warning; a charge point without credentials and one with any are in."""
        events = self.warnings()
        yield self.gateway("")
        self.assertEqual(self.open_to_all(events), [])
        client = yield self.gw.connect("CP001")
        yield self.gw.boot(client, "CP001")
        yield self.connected("CP002", b"\xff not even utf-8")


class _Verdict:
    """A ``Reply`` decided from the request being answered (``tests.authserver`` records a request
    after reading its reply, and before reading the reply's body): allow a known clientid with its
    password, deny a wrong password, ignore an unknown clientid."""

    status = 200
    headers = {b"content-type": b"application/json"}
    hang = crash = False

    def __init__(self, server: AuthServer, users: dict[str, str]) -> None:
        self._server = server
        self._users = users

    @property
    def body(self) -> bytes:
        fields = json.loads(self._server.seen[-1].body)
        known = self._users.get(fields.get("clientid"))
        result = "ignore" if known is None else "allow" if fields.get("password") == known else "deny"
        return json.dumps({"result": result}).encode()


class _Judge(AuthServer):
    """An HTTP auth server that decides as a real one would (``_Verdict``) for CP001 and CP002, or
    answers the ``Reply`` a test sets (``reply = None``: decide again)."""

    def __init__(self) -> None:
        super().__init__()
        self.reply = None  # type: ignore[assignment]

    @property  # type: ignore[override]
    def reply(self) -> Any:
        return self._answer if self._answer is not None else _Verdict(self, {"CP001": RIGHT, "CP002": RIGHT})

    @reply.setter
    def reply(self, value: Reply | None) -> None:
        self._answer = value


def http_authentication(server: AuthServer, more: str = "") -> str:
    """``[authentication]`` for the http backend posting clientid, username and password to ``server``."""
    return (
        f"[authentication]\nbackend = http\nmethod = post\nurl = {server.url('/auth')}\n{AUTH_TIMEOUT}{more}"
        "[authentication.body]\nclientid = ${clientid}\nusername = ${username}\npassword = ${password}\n"
    )


class CacheTests(AuthCase):
    """cache_ttl: an allowed (cid, username, password) is let in again without asking the backend."""

    @inlineCallbacks
    def test_second_handshake_served_while_backend_stopped(self) -> Generator[Deferred[Any], Any, None]:
        """CP001 in once (one request); backend stopped: CP001 in again from the cache, while a wrong
        password (never cached) gets 503."""
        server = _Judge()
        server.start()
        self.addCleanup(server.stop)
        yield self.gateway(http_authentication(server, "cache_ttl = 60s\n"))
        first = yield self.connected("CP001")
        yield first.close()
        self.assertEqual(len(server.seen), 1)
        yield server.stop()
        again = yield self.gw.connect("CP001", additional_headers=basic_auth("CP001", RIGHT))
        yield heartbeat(self.gw, again, "CP001")
        self.assertEqual(len(server.seen), 1)
        self.assertRefused((yield self.refused("CP001", "wrong")), *UNAVAILABLE)


class MongodbClosedPortTests(AuthCase):
    """mongodb (no server on these machines): a port nobody listens on is a 503 within the timeout."""

    @inlineCallbacks
    def test_closed_port_503(self) -> Generator[Deferred[Any], Any, None]:
        """Every handshake gets 503 authentication_backend_unavailable within request_timeout + 1 s."""
        yield self.gateway(
            f"[authentication]\nbackend = mongodb\nserver = 127.0.0.1:{free_port()}\ndatabase = ocppgw\n"
            f"collection = users\n{AUTH_TIMEOUT}[authentication.filter]\nusername = ${{username}}\n"
        )
        for cid in ("CP001", "CP002"):
            began = reactor.seconds()
            self.assertRefused((yield self.refused(cid, RIGHT)), *UNAVAILABLE)
            self.assertLess(reactor.seconds() - began, TIMEOUT + 1)
