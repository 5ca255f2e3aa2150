"""The gateway end to end: real sockets, a real Mosquitto and the `ocpp` package's ChargePoint.

``test_gateway_brokers`` runs the broker-facing cases again on RabbitMQ and NATS."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from websockets.exceptions import InvalidStatus
from zope.interface import implementer

from ocppgw.core.ports import Credentials, Decision, IAuthenticator
from tests.integration.brokers import MOSQUITTO
from tests.integration.harness import GatewayHarness
from tests.support import poll_until


class _GatewayTestCase(TestCase):
    extra_config = ""
    checking = "disable"
    authenticator: Any = None
    broker_kind = MOSQUITTO

    @inlineCallbacks
    def setUp(self) -> Any:
        self.gw = GatewayHarness(
            self, self.extra_config, self.checking, self.authenticator, broker=self.broker_kind
        )
        yield self.gw.start()

    @inlineCallbacks
    def booted(self, cid: str, interval: int = 300) -> Any:
        """Connect a ChargePoint, send BootNotification and answer it from MQTT like a central system."""
        client = yield self.gw.connect(cid)
        result = yield self.gw.boot(client, cid, interval)
        self.assertEqual(result.status, "Accepted")
        return client


class BootAndCommandTests(_GatewayTestCase):
    @inlineCallbacks
    def test_boot_flow(self) -> Any:
        """A BootNotification appears on ocpp/cp/<cid> in the reference envelope; the reply reaches the CP."""
        yield self.booted("CP1")
        (boot,) = self.gw.messages("ocpp/cp/CP1")
        self.assertEqual(set(boot), {"MessageTypeId", "UniqueId", "Action", "Payload"})
        self.assertEqual(boot["MessageTypeId"], 2)
        self.assertEqual(boot["Action"], "BootNotification")
        self.assertEqual(boot["Payload"], {"chargePointModel": "model1", "chargePointVendor": "vendor1"})
        session = self.gw.service.router.session("CP1")
        self.assertEqual(session.heartbeat_interval, 300)

    @inlineCallbacks
    def test_downstream_call_and_reply(self) -> Any:
        """A Call on ocpp/cs/<cid> reaches the charge point; its CallResult comes back with the Action."""
        yield self.booted("CP2")
        self.gw.publish(
            "CP2",
            {
                "MessageTypeId": 2,
                "UniqueId": "cmd-1",
                "Action": "RemoteStartTransaction",
                "Payload": {"idTag": "T1"},
            },
        )
        (reply,) = yield self.gw.wait_messages("ocpp/cp/CP2/Reply", 1)
        self.assertEqual(
            reply,
            {
                "MessageTypeId": 3,
                "UniqueId": "cmd-1",
                "Action": "RemoteStartTransaction",
                "Payload": {"status": "Accepted"},
            },
        )

    @inlineCallbacks
    def test_presence(self) -> Any:
        """A retained presence message says connected, then disconnected with a reason."""
        client = yield self.booted("CP3")
        yield client.close()
        yield poll_until(lambda: len(self.gw.messages("ocpp/cp/CP3/Presence")) >= 2)
        connected, disconnected = self.gw.messages("ocpp/cp/CP3/Presence")[:2]
        self.assertEqual((connected["status"], disconnected["status"]), ("connected", "disconnected"))
        self.assertEqual(connected["node"], "testnode")
        self.assertTrue(connected["peer"].startswith("127.0.0.1:"))
        self.assertIn("reason", disconnected)


class QueueTests(_GatewayTestCase):
    extra_config = "[dnstream]\nmax_mqueue_len = 2\nreply_timeout = 1s\n"

    def command(self, cid: str, unique_id: str) -> None:
        self.gw.publish(
            cid, {"MessageTypeId": 2, "UniqueId": unique_id, "Action": "ClearCache", "Payload": {}}
        )

    @inlineCallbacks
    def test_queue_order_one_in_flight(self) -> Any:
        """Three commands published at once are delivered one at a time, in order."""
        client = yield self.gw.connect("Q1", ocpp_client=False)
        for n in range(3):
            self.command("Q1", f"c{n}")
        seen = []
        for _ in range(3):
            frame = json.loads((yield client.recv()))
            seen.append(frame[1])
            session = self.gw.service.router.session("Q1")
            self.assertEqual(session.in_flight.unique_id, frame[1])
            yield client.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        self.assertEqual(seen, ["c0", "c1", "c2"])
        replies = yield self.gw.wait_messages("ocpp/cp/Q1/Reply", 3)
        self.assertEqual([r["UniqueId"] for r in replies], ["c0", "c1", "c2"])

    @inlineCallbacks
    def test_overflow_and_timeout(self) -> Any:
        """Past max_mqueue_len a command is refused with a CallError; an unanswered one times out."""
        client = yield self.gw.connect("Q2", ocpp_client=False)
        for n in range(4):
            self.command("Q2", f"c{n}")
        errors = yield self.gw.wait_messages("ocpp/cp/Q2/Reply", 1)
        self.assertEqual(errors[0]["UniqueId"], "c3")
        self.assertEqual(errors[0]["ErrorCode"], "GenericError")
        self.assertIn("queue full", errors[0]["ErrorDescription"])
        first = json.loads((yield client.recv()))
        self.assertEqual(first[1], "c0")
        errors = yield self.gw.wait_messages("ocpp/cp/Q2/Reply", 2)
        self.assertEqual(errors[1]["UniqueId"], "c0")
        self.assertIn("timed out", errors[1]["ErrorDescription"])
        second = json.loads((yield client.recv()))
        self.assertEqual(second[1], "c1")
        yield client.send(json.dumps([3, "c0", {"status": "Accepted"}]))
        late = yield self.gw.wait_messages("ocpp/cp/Q2/Reply", 3)
        self.assertEqual(
            (late[2]["MessageTypeId"], late[2]["UniqueId"], late[2]["Action"]), (3, "c0", "ClearCache")
        )


class SchemaTests(_GatewayTestCase):
    checking = "all"

    @inlineCallbacks
    def test_invalid_upstream_call_rejected(self) -> Any:
        """An invalid BootNotification gets a CallError and is not published."""
        client = yield self.gw.connect("S1", ocpp_client=False)
        yield client.send(json.dumps([2, "b1", "BootNotification", {"chargePointVendor": "v"}]))
        frame = json.loads((yield client.recv()))
        self.assertEqual(frame[:3], [4, "b1", "OccurenceConstraintViolation"])
        yield client.send(json.dumps([2, "h1", "Heartbeat", {}]))
        yield self.gw.wait_messages("ocpp/cp/S1", 1)
        self.assertEqual([m["UniqueId"] for m in self.gw.messages("ocpp/cp/S1")], ["h1"])

    @inlineCallbacks
    def test_invalid_downstream_not_sent(self) -> Any:
        """An invalid downstream Call is not sent; a CallError envelope goes to the error topic."""
        client = yield self.gw.connect("S2", ocpp_client=False)
        self.gw.publish(
            "S2", {"MessageTypeId": 2, "UniqueId": "bad", "Action": "RemoteStartTransaction", "Payload": {}}
        )
        self.gw.publish("S2", {"MessageTypeId": 2, "UniqueId": "good", "Action": "ClearCache", "Payload": {}})
        frame = json.loads((yield client.recv()))
        self.assertEqual(frame[1], "good")
        (error,) = yield self.gw.wait_messages("ocpp/cp/S2/Reply", 1)
        self.assertEqual((error["UniqueId"], error["MessageTypeId"]), ("bad", 4))
        self.assertEqual(error["ErrorCode"], "OccurenceConstraintViolation")


class BadInputTests(_GatewayTestCase):
    @inlineCallbacks
    def assertRefused(self, path_cid: str, status: int, **kwargs: Any) -> Any:
        try:
            yield self.gw.connect(path_cid, ocpp_client=False, **kwargs)
        except InvalidStatus as e:
            self.assertEqual(e.response.status_code, status)
        else:
            self.fail(f"connection for {path_cid!r} was accepted")

    @inlineCallbacks
    def test_bad_cids_refused(self) -> Any:
        """Ids with / + # (also percent-encoded), control characters or nothing get HTTP 400."""
        for cid in ["a%2Fb", "a+b", "a%23b", "a%00b", "a%0Ab", "", "x" * 257]:
            yield self.assertRefused(cid, 400)
        yield self.assertRefused("ok", 404, url=f"ws://127.0.0.1:{self.gw.port}/other/ok")
        self.assertEqual(self.gw.messages("ocpp/cp/ok"), [])

    @inlineCallbacks
    def test_wrong_subprotocol_refused(self) -> Any:
        """Offering only other subprotocols (or ocpp1.6 misspelt) gets HTTP 400; offering none is served."""
        yield self.assertRefused("W1", 400, subprotocols=["ocpp2.0.1"])
        yield self.assertRefused("W1", 400, subprotocols=["OCPP1.6"])

    @inlineCallbacks
    def test_bad_frames_answered_connection_stays(self) -> Any:
        """Malformed frames get CallErrors where a UniqueId is readable; the connection stays up."""
        client = yield self.gw.connect("B1", ocpp_client=False)
        yield client.send("not json")
        yield client.send(json.dumps([2, "u1", "Heartbeat"]))
        frame = json.loads((yield client.recv()))
        self.assertEqual(frame[:3], [4, "u1", "FormationViolation"])
        yield client.send(json.dumps([7, "u2", {}]))
        frame = json.loads((yield client.recv()))
        self.assertEqual(frame[:3], [4, "u2", "ProtocolError"])
        yield client.send(json.dumps([3, "u3"]))
        yield client.send(json.dumps([2, "u4", "Heartbeat", {}]))
        (heartbeat,) = yield self.gw.wait_messages("ocpp/cp/B1", 1)
        self.assertEqual(heartbeat["UniqueId"], "u4")


@implementer(IAuthenticator)
class _LaterAuthenticator:
    """Answers on the next reactor turn, like a database would; remembers what it was shown."""

    def __init__(self) -> None:
        self.seen: list[Credentials] = []

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        self.seen.append(credentials)
        allowed = credentials.username == credentials.cid and credentials.password == b"s3cr\xffet"
        decision = Decision.allow() if allowed else Decision.deny("bad_username_or_password")
        return deferLater(reactor, 0, lambda: decision)


class AuthenticationTests(_GatewayTestCase):
    def setUp(self) -> Any:
        self.authenticator = _LaterAuthenticator()
        return super().setUp()

    @inlineCallbacks
    def test_credentials_reach_authenticator(self) -> Any:
        """Basic-auth username and byte password reach the authenticator; a good pair connects."""
        token = base64.b64encode(b"A1:s3cr\xffet").decode()
        client = yield self.gw.connect(
            "A1", ocpp_client=False, additional_headers={"Authorization": f"Basic {token}"}
        )
        yield client.send(json.dumps([2, "h", "Heartbeat", {}]))
        yield self.gw.wait_messages("ocpp/cp/A1", 1)
        (seen,) = self.authenticator.seen
        self.assertEqual((seen.cid, seen.username, seen.password), ("A1", "A1", b"s3cr\xffet"))
        self.assertTrue(seen.peer.startswith("127.0.0.1:"))
        self.assertEqual(seen.listener, "ws.default")

    @inlineCallbacks
    def test_denied_gets_401(self) -> Any:
        """A deny answers HTTP 401 and nothing is published."""
        token = base64.b64encode(b"A2:wrong").decode()
        try:
            yield self.gw.connect(
                "A2", ocpp_client=False, additional_headers={"Authorization": f"Basic {token}"}
            )
        except InvalidStatus as e:
            self.assertEqual(e.response.status_code, 401)
        else:
            self.fail("a denied charge point connected")
        self.assertEqual(self.gw.messages("ocpp/cp/A2/Presence"), [])


class HandshakeTimeoutTests(_GatewayTestCase):
    extra_config = "[gateway]\nidle_timeout = 300ms\n"

    @inlineCallbacks
    def test_silent_tcp_connection_closed(self) -> Any:
        """A TCP connection that never completes its WebSocket handshake is closed after idle_timeout."""
        lost: Deferred[None] = Deferred()

        class Silent(Protocol):
            def connectionLost(self, reason: Any = None) -> None:
                lost.callback(None)

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.gw.port)
        yield connectProtocol(endpoint, Silent())
        yield poll_until(lambda: lost.called, timeout=5)


class LivenessTests(_GatewayTestCase):
    extra_config = "[gateway]\ndefault_heartbeat_interval = 1s\nping_interval = 0\n"

    @inlineCallbacks
    def test_silent_charge_point_closed(self) -> Any:
        """A charge point that sends nothing for the heartbeat interval is closed."""
        client = yield self.gw.connect("L1", ocpp_client=False)
        code, _ = yield client.wait_closed(timeout=10)
        self.assertEqual(code, 1000)
        presence = yield self.gw.wait_messages("ocpp/cp/L1/Presence", 2)
        self.assertIn("no data", presence[-1]["reason"])


class TakeoverTests(_GatewayTestCase):
    @inlineCallbacks
    def test_newest_connection_wins(self) -> Any:
        """A second connection with the same cid closes the first; commands reach the new one only."""
        old = yield self.gw.connect("D1", ocpp_client=False)
        new = yield self.gw.connect("D1", ocpp_client=False)
        code, reason = yield old.wait_closed()
        self.assertEqual(code, 1000)
        self.assertIn("replaced", reason)
        self.assertIsNotNone(self.gw.service.router.session("D1"))
        self.assertEqual(self.gw.service.metrics.value("takeovers"), 1)
        self.gw.publish("D1", {"MessageTypeId": 2, "UniqueId": "t1", "Action": "ClearCache", "Payload": {}})
        frame = json.loads((yield new.recv()))
        self.assertEqual(frame[1], "t1")
        statuses = [m["status"] for m in self.gw.messages("ocpp/cp/D1/Presence")]
        self.assertNotIn("disconnected", statuses)


class BrokerRestartTests(_GatewayTestCase):
    @inlineCallbacks
    def test_no_accepted_message_lost(self) -> Any:
        """Calls accepted while the broker is down are published, all and in order, after it returns."""
        client = yield self.gw.connect("R1", ocpp_client=False)
        yield self.gw.broker.stop()
        yield poll_until(lambda: not self.gw.service.link.connected)
        for n in range(50):
            yield client.send(json.dumps([2, f"m{n}", "Heartbeat", {}]))
        # A round trip through the gateway proves the 50 frames were read before the broker returns.
        yield client.send(json.dumps([2, "probe", "NoSuchAction", []]))
        frame = json.loads((yield client.recv()))
        self.assertEqual(frame[:2], [4, "probe"])
        self.assertEqual(self.gw.messages("ocpp/cp/R1"), [])
        yield self.gw.broker.start()
        yield poll_until(lambda: self.gw.service.link.connected)
        received = yield self.gw.wait_messages("ocpp/cp/R1", 50, timeout=15)
        self.assertEqual([m["UniqueId"] for m in received], [f"m{n}" for n in range(50)])
