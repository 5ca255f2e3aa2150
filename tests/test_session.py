"""ChargePointSession: the per-charge-point OCPP-J state machine, driven by a Clock."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.core import messages
from ocppgw.core import session as session_module
from ocppgw.core.messages import Call, CallError, CallResult, Message
from ocppgw.core.schemas import SchemaRegistry, shipped_schema_dir
from ocppgw.core.session import ChargePointSession, SessionSettings
from ocppgw.metrics import Metrics

BOOT = {"chargePointVendor": "VendorX", "chargePointModel": "ModelY"}
BOOT_ACCEPTED = {"currentTime": "2024-01-01T00:00:00Z", "interval": 300, "status": "Accepted"}

_SCHEMAS: list[SchemaRegistry] = []


def _schemas() -> SchemaRegistry:
    """The shipped schemas, compiled once for the module."""
    if not _SCHEMAS:
        _SCHEMAS.append(SchemaRegistry.load(shipped_schema_dir(), "urn:OCPP:1.6:2019:12:"))
    return _SCHEMAS[0]


class _SpinGuardClock(Clock):
    """A Clock that fails, rather than hangs, when a call keeps rescheduling itself at the same instant."""

    def __init__(self) -> None:
        super().__init__()
        self._same_instant = (None, 0)

    def callLater(self, delay: float, callable: Any, *args: Any, **kw: Any) -> Any:
        when, count = self._same_instant
        count = count + 1 if when == self.seconds() else 1
        self._same_instant = (self.seconds(), count)
        if count > 50:
            raise AssertionError(f"50 calls scheduled at t={self.seconds()!r} without time passing")
        return super().callLater(delay, callable, *args, **kw)


class RecordingOutput:
    """The charge point and the upstream of a session: records frames, publishes and closes; ``accept``
    says what publishing answers."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.published: list[Message] = []
        self.refused: list[Message] = []
        self.closed: list[tuple[int, str]] = []
        self.accept = True

    def send_text(self, text: str) -> None:
        self.sent.append(text)

    def publish(self, message: Message) -> bool:
        (self.published if self.accept else self.refused).append(message)
        return self.accept

    publish_call = publish_result = publish_error = publish

    def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))


def frame(*parts: Any) -> str:
    return json.dumps(list(parts), separators=(",", ":"), ensure_ascii=False)


def envelope(**body: Any) -> bytes:
    return json.dumps(body).encode("utf-8")


def dn_call(unique_id: str, action: str = "Reset", payload: dict | None = None) -> bytes:
    return envelope(
        MessageTypeId=2,
        UniqueId=unique_id,
        Action=action,
        Payload={"type": "Soft"} if payload is None else payload,
    )


def dn_result(unique_id: str, payload: dict, action: str | None = None) -> bytes:
    body: dict[str, Any] = {"MessageTypeId": 3, "UniqueId": unique_id, "Payload": payload}
    if action is not None:
        body["Action"] = action
    return envelope(**body)


class SessionTestCase(SynchronousTestCase):
    """A Clock, a recording output and metrics; every session is ended and no timer may remain."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.output = RecordingOutput()
        self.metrics = Metrics()
        self.sessions: list[ChargePointSession] = []
        self.addCleanup(self._no_timers_left)

    def _no_timers_left(self) -> None:
        for session in self.sessions:
            session.end("test over")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def make(self, schemas: SchemaRegistry | None = None, **settings: Any) -> ChargePointSession:
        values: dict[str, Any] = {"heartbeat_interval": 60.0, "max_queue": 3, "reply_timeout": 30.0}
        values.update(settings)
        session = ChargePointSession(
            "CP1", SessionSettings(**values), self.output, self.output, self.clock, self.metrics, schemas
        )
        session.start()
        self.sessions.append(session)
        return session


class BootFlowTests(SessionTestCase):
    """A BootNotification goes up at once; its confirmation comes down at once and sets the interval."""

    def test_boot_call_published(self) -> None:
        """The charge point's BootNotification is published as a Call and nothing is written back."""
        session = self.make()
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        self.assertEqual(self.output.published, [Call("b1", "BootNotification", BOOT)])
        self.assertEqual(self.output.sent, [])
        self.assertEqual(self.metrics.value("frames_received", action="BootNotification"), 1)

    def test_confirmation_sent_and_interval_set(self) -> None:
        """An Accepted confirmation is written to the charge point at once and its interval adopted."""
        session = self.make()
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        session.envelope_received(dn_result("b1", BOOT_ACCEPTED))
        self.assertEqual(self.output.sent, [frame(3, "b1", BOOT_ACCEPTED)])
        self.assertEqual(session.heartbeat_interval, 300.0)
        self.assertEqual(self.output.published, [Call("b1", "BootNotification", BOOT)])

    def test_confirmation_not_queued_behind_commands(self) -> None:
        """With a downstream Call in flight and more queued, the confirmation still goes out at once."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2"))
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        session.envelope_received(dn_result("b1", BOOT_ACCEPTED))
        self.assertEqual(
            self.output.sent, [frame(2, "c1", "Reset", {"type": "Soft"}), frame(3, "b1", BOOT_ACCEPTED)]
        )
        self.assertEqual(session.in_flight, Call("c1", "Reset", {"type": "Soft"}))
        self.assertEqual(session.queue_length, 1)

    def test_pending_or_rejected_keeps_interval(self) -> None:
        """Only an Accepted confirmation changes the interval."""
        session = self.make()
        for uid, status in (("b1", "Pending"), ("b2", "Rejected")):
            session.frame_received(frame(2, uid, "BootNotification", BOOT))
            session.envelope_received(dn_result(uid, {**BOOT_ACCEPTED, "status": status}))
        self.assertEqual(session.heartbeat_interval, 60.0)
        self.assertEqual(len(self.output.sent), 2)

    def test_bad_intervals_ignored(self) -> None:
        """A zero, negative, boolean, string or missing interval leaves the interval alone."""
        session = self.make()
        for n, interval in enumerate((0, -5, True, "300", None, [300])):
            uid = f"b{n}"
            payload = {**BOOT_ACCEPTED, "interval": interval}
            if interval is None:
                del payload["interval"]
            session.frame_received(frame(2, uid, "BootNotification", BOOT))
            session.envelope_received(dn_result(uid, payload))
        self.assertEqual(session.heartbeat_interval, 60.0)

    def test_float_interval(self) -> None:
        """A fractional interval is taken as is."""
        session = self.make()
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        session.envelope_received(dn_result("b1", {**BOOT_ACCEPTED, "interval": 7.5}))
        self.assertEqual(session.heartbeat_interval, 7.5)

    def test_other_action_with_boot_shape(self) -> None:
        """A confirmation of another known Action never sets the interval, even shaped like a boot one."""
        session = self.make()
        session.frame_received(frame(2, "a1", "DataTransfer", {"vendorId": "x"}))
        session.envelope_received(dn_result("a1", BOOT_ACCEPTED))
        self.assertEqual(session.heartbeat_interval, 60.0)
        self.assertEqual(self.output.sent, [frame(3, "a1", BOOT_ACCEPTED)])

    def test_unknown_origin_detected_by_shape(self) -> None:
        """A confirmation of an unknown UniqueId without Action is recognised by shape, like the reference."""
        session = self.make()
        session.envelope_received(dn_result("zz", BOOT_ACCEPTED))
        self.assertEqual(session.heartbeat_interval, 300.0)

    def test_unknown_origin_with_other_action(self) -> None:
        """An unknown UniqueId whose envelope names another Action does not set the interval."""
        session = self.make()
        session.envelope_received(dn_result("zz", BOOT_ACCEPTED, action="Heartbeat"))
        self.assertEqual(session.heartbeat_interval, 60.0)
        self.assertEqual(self.output.sent, [frame(3, "zz", BOOT_ACCEPTED)])

    def test_downstream_call_error_for_own_call(self) -> None:
        """A CallError the central system sends for a charge point's Call is written at once."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        session.frame_received(frame(2, "a1", "Authorize", {"idTag": "T"}))
        session.envelope_received(
            envelope(MessageTypeId=4, UniqueId="a1", ErrorCode="InternalError", ErrorDescription="db down")
        )
        self.assertEqual(self.output.sent[-1], frame(4, "a1", "InternalError", "db down", {}))
        self.assertEqual(session.in_flight, Call("c1", "Reset", {"type": "Soft"}))


class DownstreamTests(SessionTestCase):
    """Downstream Calls: one in flight, a bounded queue, reply timeouts."""

    def test_call_sent(self) -> None:
        """A downstream Call is written to the charge point and awaits its reply."""
        session = self.make()
        session.envelope_received(dn_call("c1", "GetConfiguration", {"key": ["HeartbeatInterval"]}))
        self.assertEqual(
            self.output.sent, [frame(2, "c1", "GetConfiguration", {"key": ["HeartbeatInterval"]})]
        )
        self.assertEqual(session.in_flight, Call("c1", "GetConfiguration", {"key": ["HeartbeatInterval"]}))
        self.assertEqual(session.queue_length, 0)
        self.assertEqual(self.output.published, [])

    def test_one_in_flight(self) -> None:
        """Further Calls wait while one is in flight."""
        session = self.make()
        for uid in ("c1", "c2", "c3"):
            session.envelope_received(dn_call(uid))
        self.assertEqual(self.output.sent, [frame(2, "c1", "Reset", {"type": "Soft"})])
        self.assertEqual(session.queue_length, 2)

    def test_queue_order(self) -> None:
        """Each reply releases the next queued Call, in arrival order; replies carry the Call's Action."""
        session = self.make()
        session.envelope_received(dn_call("c1", "Reset"))
        session.envelope_received(dn_call("c2", "ClearCache", {}))
        session.envelope_received(dn_call("c3", "UnlockConnector", {"connectorId": 1}))
        session.frame_received(frame(3, "c1", {"status": "Accepted"}))
        session.frame_received(frame(4, "c2", "NotSupported", "no cache", {"x": 1}))
        session.frame_received(frame(3, "c3", {"status": "Unlocked"}))
        self.assertEqual(
            self.output.sent,
            [
                frame(2, "c1", "Reset", {"type": "Soft"}),
                frame(2, "c2", "ClearCache", {}),
                frame(2, "c3", "UnlockConnector", {"connectorId": 1}),
            ],
        )
        self.assertEqual(
            self.output.published,
            [
                CallResult("c1", {"status": "Accepted"}, "Reset"),
                CallError("c2", "NotSupported", "no cache", {"x": 1}, "ClearCache"),
                CallResult("c3", {"status": "Unlocked"}, "UnlockConnector"),
            ],
        )
        self.assertIsNone(session.in_flight)
        self.assertEqual(session.queue_length, 0)

    def test_reply_envelope_has_action(self) -> None:
        """The published reply envelope names the Action of the downstream Call it answers."""
        session = self.make()
        session.envelope_received(dn_call("c1", "GetConfiguration", {}))
        session.frame_received(frame(3, "c1", {"configurationKey": []}))
        body = json.loads(messages.encode_envelope(self.output.published[0]))
        self.assertEqual(
            body,
            {
                "MessageTypeId": 3,
                "UniqueId": "c1",
                "Action": "GetConfiguration",
                "Payload": {"configurationKey": []},
            },
        )

    def test_unsolicited_reply(self) -> None:
        """A reply to no known Call is published without Action, counted, and leaves the queue alone."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2"))
        session.frame_received(frame(3, "nobody", {}))
        self.assertEqual(self.output.published, [CallResult("nobody", {}, None)])
        self.assertEqual(self.metrics.total("replies_unsolicited"), 1)
        self.assertEqual(session.in_flight.unique_id, "c1")
        self.assertEqual(session.queue_length, 1)
        self.assertEqual(len(self.output.sent), 1)

    def test_overflow(self) -> None:
        """Beyond max_queue a Call is dropped, counted and answered with a CallError envelope."""
        session = self.make(max_queue=2)
        for uid in ("c1", "c2", "c3"):
            session.envelope_received(dn_call(uid))
        session.envelope_received(dn_call("c4", "TriggerMessage", {"requestedMessage": "Heartbeat"}))
        self.assertEqual(session.queue_length, 2)
        self.assertEqual(
            self.output.published,
            [
                CallError(
                    "c4",
                    "GenericError",
                    "Not sent: downstream queue full (2 calls waiting)",
                    {},
                    "TriggerMessage",
                )
            ],
        )
        self.assertEqual(self.metrics.value("dnstream_dropped", action="TriggerMessage"), 1)
        self.assertEqual(self.metrics.total("dnstream_dropped"), 1)
        for uid in ("c1", "c2", "c3"):
            session.frame_received(frame(3, uid, {"status": "Accepted"}))
        self.assertEqual([json.loads(t)[1] for t in self.output.sent], ["c1", "c2", "c3"])

    def test_zero_queue(self) -> None:
        """With max_queue 0 every Call arriving while one is in flight is dropped."""
        session = self.make(max_queue=0)
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2"))
        self.assertEqual(len(self.output.sent), 1)
        self.assertEqual([m.unique_id for m in self.output.published], ["c2"])
        self.assertEqual(session.queue_length, 0)

    def test_reply_timeout(self) -> None:
        """No reply within reply_timeout: a GenericError envelope saying it timed out; the queue moves on."""
        session = self.make(reply_timeout=30.0)
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2", "ClearCache", {}))
        self.clock.advance(29.999)
        self.assertEqual(self.output.published, [])
        self.assertEqual(len(self.output.sent), 1)
        self.clock.advance(0.001)
        self.assertEqual(
            self.output.published,
            [
                CallError(
                    "c1", "GenericError", "Charge point did not reply within 30s (timed out)", {}, "Reset"
                )
            ],
        )
        self.assertIn("timed out", self.output.published[0].description)
        self.assertEqual(self.output.sent[-1], frame(2, "c2", "ClearCache", {}))
        self.assertEqual(session.in_flight.unique_id, "c2")
        self.assertEqual(self.metrics.value("reply_timeouts", action="Reset"), 1)

    def test_reply_timeout_fractional(self) -> None:
        """A fractional timeout is described without trailing zeros."""
        session = self.make(reply_timeout=2.5)
        session.envelope_received(dn_call("c1"))
        self.clock.advance(2.5)
        self.assertEqual(
            self.output.published[0].description, "Charge point did not reply within 2.5s (timed out)"
        )

    def test_reply_cancels_timeout(self) -> None:
        """A timely reply cancels the reply timer: nothing is published later."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        self.clock.advance(10)
        session.frame_received(frame(3, "c1", {"status": "Accepted"}))
        self.clock.advance(100)
        self.assertEqual(self.output.published, [CallResult("c1", {"status": "Accepted"}, "Reset")])

    def test_each_call_gets_full_timeout(self) -> None:
        """The next Call's timeout counts from when it was sent, not when it was queued."""
        session = self.make(reply_timeout=30.0)
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2"))
        self.clock.advance(20)
        session.frame_received(frame(3, "c1", {"status": "Accepted"}))
        self.clock.advance(29.9)
        self.assertEqual(len(self.output.published), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.output.published[-1].unique_id, "c2")
        self.assertEqual(self.output.published[-1].code, "GenericError")

    def test_late_reply_forwarded(self) -> None:
        """A reply after the timeout is still published with its Action, not disturbing the next Call."""
        session = self.make()
        session.envelope_received(dn_call("c1", "ChangeConfiguration", {"key": "k", "value": "v"}))
        session.envelope_received(dn_call("c2"))
        self.clock.advance(30)
        session.frame_received(frame(3, "c1", {"status": "Accepted"}))
        self.assertEqual(
            self.output.published[-1], CallResult("c1", {"status": "Accepted"}, "ChangeConfiguration")
        )
        self.assertEqual(self.metrics.total("replies_late"), 1)
        self.assertEqual(session.in_flight.unique_id, "c2")
        self.assertEqual(len(self.output.sent), 2)
        self.clock.advance(30)
        self.assertEqual(self.output.published[-1].unique_id, "c2")

    def test_late_call_error_forwarded(self) -> None:
        """A late CallError also carries the Action; a second late reply of the same id has none."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        self.clock.advance(30)
        session.frame_received(frame(4, "c1", "InternalError", "oops", {}))
        session.frame_received(frame(4, "c1", "InternalError", "again", {}))
        self.assertEqual(
            self.output.published[1:],
            [
                CallError("c1", "InternalError", "oops", {}, "Reset"),
                CallError("c1", "InternalError", "again", {}, None),
            ],
        )

    def test_expired_memory_bounded(self) -> None:
        """Only the most recent timed-out Calls are remembered for late replies."""
        limit = session_module._EXPIRED_DOWNSTREAM_LIMIT
        session = self.make(max_queue=limit + 1, heartbeat_interval=0.0)
        for n in range(limit + 1):
            session.envelope_received(dn_call(f"c{n}"))
        self.clock.pump([30.0] * (limit + 1))
        self.assertEqual(len(self.output.published), limit + 1)
        session.frame_received(frame(3, "c0", {}))
        session.frame_received(frame(3, "c1", {}))
        self.assertEqual(
            self.output.published[-2:], [CallResult("c0", {}, None), CallResult("c1", {}, "Reset")]
        )

    def test_own_calls_not_queued(self) -> None:
        """The charge point's own Calls are published while commands wait; their replies pass the queue."""
        session = self.make()
        for uid in ("c1", "c2", "c3"):
            session.envelope_received(dn_call(uid))
        session.frame_received(frame(2, "a1", "Authorize", {"idTag": "TAG"}))
        self.assertEqual(self.output.published, [Call("a1", "Authorize", {"idTag": "TAG"})])
        session.envelope_received(dn_result("a1", {"idTagInfo": {"status": "Accepted"}}))
        self.assertEqual(self.output.sent[-1], frame(3, "a1", {"idTagInfo": {"status": "Accepted"}}))
        self.assertEqual(session.in_flight.unique_id, "c1")
        self.assertEqual(session.queue_length, 2)

    def test_downstream_call_error_passthrough(self) -> None:
        """A downstream CallError envelope becomes a CallError frame with its details."""
        session = self.make()
        session.envelope_received(
            envelope(
                MessageTypeId=4,
                UniqueId="x",
                ErrorCode="NotImplemented",
                ErrorDescription="nope",
                ErrorDetails={"a": 1},
            )
        )
        self.assertEqual(self.output.sent, [frame(4, "x", "NotImplemented", "nope", {"a": 1})])

    def test_invalid_envelope_without_unique_id(self) -> None:
        """An envelope without a readable UniqueId is counted and dropped."""
        session = self.make()
        session.envelope_received(b"not json")
        session.envelope_received(envelope(MessageTypeId=2, Action="Reset", Payload={}))
        self.assertEqual((self.output.sent, self.output.published), ([], []))
        self.assertEqual(self.metrics.total("envelopes_invalid"), 2)

    def test_invalid_envelope_with_unique_id(self) -> None:
        """An envelope with a UniqueId but a defect is answered with a FormationViolation envelope."""
        session = self.make()
        session.envelope_received(envelope(MessageTypeId=2, UniqueId="c1", Payload={}))
        self.assertEqual(self.output.sent, [])
        self.assertEqual(
            self.output.published,
            [CallError("c1", "FormationViolation", "Rejected by gateway: a Call needs an Action", {}, None)],
        )
        self.assertEqual(self.metrics.total("envelopes_invalid"), 1)


class BadFrameTests(SessionTestCase):
    """Bad frames get the OCPP-J CallError when a UniqueId can be read, and nothing otherwise."""

    def test_invalid_json(self) -> None:
        """Bad JSON is counted and logged, not answered; the connection stays up."""
        session = self.make()
        session.frame_received("[2, oops")
        self.assertEqual((self.output.sent, self.output.published, self.output.closed), ([], [], []))
        self.assertEqual(self.metrics.value("frames_invalid", code="FormationViolation"), 1)

    def test_wrong_payload_type(self) -> None:
        """A Call with a non-object payload is answered with a TypeConstraintViolation."""
        session = self.make()
        session.frame_received('[2,"u1","Heartbeat",[]]')
        self.assertEqual(
            self.output.sent, [frame(4, "u1", "TypeConstraintViolation", "Payload must be a JSON object", {})]
        )
        self.assertEqual(self.output.published, [])
        self.assertEqual(self.metrics.value("frames_invalid", code="TypeConstraintViolation"), 1)

    def test_wrong_arity(self) -> None:
        """A short Call is answered with a FormationViolation."""
        session = self.make()
        session.frame_received('[2,"u1","Heartbeat"]')
        self.assertEqual(
            self.output.sent, [frame(4, "u1", "FormationViolation", "A Call must have 4 elements", {})]
        )

    def test_unknown_type_id(self) -> None:
        """An unknown MessageTypeId is answered with a ProtocolError."""
        session = self.make()
        session.frame_received('[7,"u1","Heartbeat",{}]')
        self.assertEqual(self.output.sent, [frame(4, "u1", "ProtocolError", "Unknown MessageTypeId 7", {})])

    def test_replies_never_answered(self) -> None:
        """Broken CallResults and CallErrors are never answered with a CallError, nor published."""
        session = self.make()
        for text in (
            '[3,"u1"]',
            '[3,"u1",[]]',
            '[4,"u1","x"]',
            '[4,"u1",1,2,{}]',
            '["3","u1",{}]',
            '[4.0,"u"]',
        ):
            session.frame_received(text)
        self.assertEqual((self.output.sent, self.output.published), ([], []))
        self.assertEqual(self.metrics.total("frames_invalid"), 6)
        self.assertEqual(self.output.closed, [])

    def test_no_unique_id(self) -> None:
        """Without a readable UniqueId nothing is answered."""
        session = self.make()
        for text in ("[]", "{}", '[2,5,"Heartbeat",{}]', "[2]"):
            session.frame_received(text)
        self.assertEqual(self.output.sent, [])

    def test_lone_surrogate_both_ways(self) -> None:
        """An escaped lone surrogate passes through both ways as valid UTF-8 JSON."""
        session = self.make()
        session.frame_received('[2,"d1","DataTransfer",{"vendorId":"v","data":"\\ud800"}]')
        self.assertEqual(
            self.output.published, [Call("d1", "DataTransfer", {"vendorId": "v", "data": "\ud800"})]
        )
        messages.encode_envelope(self.output.published[0]).decode("utf-8")
        session.envelope_received(b'{"MessageTypeId":3,"UniqueId":"d1","Payload":{"data":"\\udfff"}}')
        self.assertEqual(self.output.sent, ['[3,"d1",{"data":"\\udfff"}]'])

    def test_too_deep_frame(self) -> None:
        """A frame nested beyond the codec's limit is counted and answered, not published."""
        session = self.make()
        depth = messages.MAX_DEPTH + 5
        session.frame_received('[2,"u","DataTransfer",' + '{"a":' * depth + "1" + "}" * depth + "]")
        self.assertEqual(
            (self.output.sent, self.output.published),
            (['[4,"u","FormationViolation","Invalid JSON: nested deeper than 64 levels",{}]'], []),
        )
        self.assertEqual(self.metrics.value("frames_invalid", code="FormationViolation"), 1)

    def test_non_string_error_code_envelope(self) -> None:
        """A downstream CallError whose ErrorCode is a list is refused, not a crash."""
        session = self.make()
        session.envelope_received(b'{"MessageTypeId":4,"UniqueId":"e1","ErrorCode":["GenericError"]}')
        self.assertEqual(self.output.sent, [])
        self.assertEqual(
            self.output.published,
            [
                CallError(
                    "e1",
                    "FormationViolation",
                    "Rejected by gateway: ErrorCode must be an OCPP 1.6 error code",
                    {},
                )
            ],
        )

    def test_bad_frame_leaves_queue(self) -> None:
        """A bad frame does not answer or release the downstream Call in flight."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2"))
        session.frame_received('[3,"c1"]')
        self.assertEqual(session.in_flight.unique_id, "c1")
        self.assertEqual(len(self.output.sent), 1)


class SchemaTests(SessionTestCase):
    """Schema checks in both directions, per message_format_checking."""

    def test_upstream_invalid_call(self) -> None:
        """An invalid Call from the charge point is answered with the matching CallError and not published."""
        session = self.make(_schemas(), check_upstream=True)
        session.frame_received(frame(2, "b1", "BootNotification", {"chargePointVendor": "V"}))
        self.assertEqual(self.output.published, [])
        self.assertEqual(
            self.output.sent,
            [
                frame(
                    4,
                    "b1",
                    "OccurenceConstraintViolation",
                    "BootNotificationRequest: 'chargePointModel' is a required property",
                    {},
                )
            ],
        )
        self.assertEqual(
            self.metrics.value("schema_rejected", direction="upstream", action="BootNotification"), 1
        )

    def test_upstream_valid_call(self) -> None:
        """A valid Call is published."""
        session = self.make(_schemas(), check_upstream=True)
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        self.assertEqual(self.output.published, [Call("b1", "BootNotification", BOOT)])
        self.assertEqual(self.output.sent, [])

    def test_upstream_unknown_action(self) -> None:
        """A Call with no schema passes through and is counted (under "other": not an OCPP 1.6 Action)."""
        session = self.make(_schemas(), check_upstream=True)
        session.frame_received(frame(2, "x1", "VendorThing", {"a": 1}))
        self.assertEqual(self.output.published, [Call("x1", "VendorThing", {"a": 1})])
        self.assertEqual(self.metrics.value("schema_missing", action="other", kind="Request"), 1)

    def test_upstream_check_off(self) -> None:
        """With upstream checks off an invalid Call is published."""
        session = self.make(_schemas(), check_dnstream=True)
        session.frame_received(frame(2, "b1", "BootNotification", {}))
        self.assertEqual(self.output.published, [Call("b1", "BootNotification", {})])

    def test_upstream_invalid_call_result(self) -> None:
        """An invalid CallResult from the charge point becomes a CallError envelope and releases the queue."""
        session = self.make(_schemas(), check_upstream=True)
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2"))
        session.frame_received(frame(3, "c1", {"status": "Maybe"}))
        self.assertEqual(len(self.output.published), 1)
        published = self.output.published[0]
        self.assertEqual(
            (published.unique_id, published.code, published.action),
            ("c1", "PropertyConstraintViolation", "Reset"),
        )
        self.assertTrue(
            published.description.startswith("Invalid CallResult from charge point: ResetResponse: status: ")
        )
        self.assertEqual(session.in_flight.unique_id, "c2")

    def test_downstream_invalid_call(self) -> None:
        """An invalid downstream Call is not sent; a CallError envelope with its UniqueId is published."""
        session = self.make(_schemas(), check_dnstream=True)
        session.envelope_received(dn_call("c1", "Reset", {"type": "Medium"}))
        self.assertEqual(self.output.sent, [])
        self.assertIsNone(session.in_flight)
        self.assertEqual(len(self.output.published), 1)
        published = self.output.published[0]
        self.assertIsInstance(published, CallError)
        self.assertEqual(
            (published.unique_id, published.code, published.action),
            ("c1", "PropertyConstraintViolation", "Reset"),
        )
        self.assertTrue(
            published.description.startswith("Not sent: ResetRequest: type: "), published.description
        )
        self.assertEqual(self.metrics.value("schema_rejected", direction="dnstream", action="Reset"), 1)

    def test_downstream_invalid_call_result(self) -> None:
        """An invalid confirmation of the charge point's Call is not sent and does not set the interval."""
        session = self.make(_schemas(), check_dnstream=True)
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        session.envelope_received(dn_result("b1", {**BOOT_ACCEPTED, "status": "Great"}))
        self.assertEqual(self.output.sent, [])
        self.assertEqual(self.output.published[-1].action, "BootNotification")
        self.assertEqual(self.output.published[-1].code, "PropertyConstraintViolation")
        self.assertEqual(session.heartbeat_interval, 60.0)

    def test_downstream_valid(self) -> None:
        """Valid downstream messages are sent."""
        session = self.make(_schemas(), check_dnstream=True)
        session.envelope_received(dn_call("c1", "Reset", {"type": "Hard"}))
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        session.envelope_received(dn_result("b1", BOOT_ACCEPTED))
        self.assertEqual(len(self.output.sent), 2)
        self.assertEqual(session.heartbeat_interval, 300.0)

    def test_downstream_check_off(self) -> None:
        """With downstream checks off an invalid Call is sent."""
        session = self.make(_schemas(), check_upstream=True)
        session.envelope_received(dn_call("c1", "Reset", {"type": "Medium"}))
        self.assertEqual(self.output.sent, [frame(2, "c1", "Reset", {"type": "Medium"})])

    def test_queued_call_checked_on_arrival(self) -> None:
        """An invalid Call is refused at once even while another Call is in flight."""
        session = self.make(_schemas(), check_dnstream=True)
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2", "Reset", {}))
        self.assertEqual(session.queue_length, 0)
        self.assertEqual(self.output.published[0].code, "OccurenceConstraintViolation")

    def test_pending_memory_bounded(self) -> None:
        """Only recent charge point Calls are remembered to check their confirmations."""
        limit = session_module._PENDING_UPSTREAM_LIMIT
        session = self.make(_schemas(), check_dnstream=True)
        session.frame_received(frame(2, "old", "BootNotification", BOOT))
        session.frame_received(frame(2, "new", "BootNotification", BOOT))
        for n in range(limit - 1):
            session.frame_received(frame(2, f"h{n}", "Heartbeat", {}))
        session.envelope_received(dn_result("old", {"bogus": 1}))
        session.envelope_received(dn_result("new", {"bogus": 1}))
        self.assertEqual(self.output.sent, [frame(3, "old", {"bogus": 1})])
        self.assertEqual(self.output.published[-1].unique_id, "new")
        self.assertEqual(self.output.published[-1].code, "FormationViolation")


class RefusedPublishTests(SessionTestCase):
    """When the gateway cannot accept a publish (buffer full)."""

    def test_call_refused(self) -> None:
        """A refused upstream Call is answered with InternalError and counted."""
        session = self.make()
        self.output.accept = False
        session.frame_received(frame(2, "m1", "MeterValues", {"connectorId": 1, "meterValue": []}))
        self.assertEqual(
            self.output.sent,
            [frame(4, "m1", "InternalError", "Central system unreachable, try again later", {})],
        )
        self.assertEqual(self.metrics.value("calls_refused", action="MeterValues"), 1)
        self.assertEqual(len(self.output.refused), 1)

    def test_refused_reply_still_releases_queue(self) -> None:
        """A reply that cannot be published is counted, and the next Call is still sent."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2"))
        self.output.accept = False
        session.frame_received(frame(3, "c1", {"status": "Accepted"}))
        self.assertEqual(self.metrics.total("replies_dropped"), 1)
        self.assertEqual(session.in_flight.unique_id, "c2")

    def test_refused_gateway_error(self) -> None:
        """A gateway error envelope that cannot be published is counted."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        self.output.accept = False
        self.clock.advance(30)
        self.assertEqual(self.metrics.total("replies_dropped"), 1)
        self.assertEqual(len(self.output.refused), 1)


class LivenessTests(SessionTestCase):
    """A charge point silent for interval x backoff is closed."""

    def test_closes_after_interval(self) -> None:
        """Silence for the interval closes the connection with a reason."""
        self.make(heartbeat_interval=60.0)
        self.clock.advance(59.999)
        self.assertEqual(self.output.closed, [])
        self.clock.advance(0.001)
        self.assertEqual(self.output.closed, [(1000, "no data for 60s")])
        self.assertEqual(self.metrics.total("liveness_closes"), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backoff_multiplies(self) -> None:
        """The limit is interval x backoff."""
        self.make(heartbeat_interval=60.0, heartbeat_backoff=2)
        self.clock.advance(119.9)
        self.assertEqual(self.output.closed, [])
        self.clock.advance(0.1)
        self.assertEqual(self.output.closed, [(1000, "no data for 120s")])

    def test_backoff_zero_means_one(self) -> None:
        """A backoff below 1 counts as 1."""
        self.make(heartbeat_interval=10.0, heartbeat_backoff=0)
        self.clock.advance(10)
        self.assertEqual(self.output.closed, [(1000, "no data for 10s")])

    def test_activity_postpones(self) -> None:
        """Activity (a frame, a pong) restarts the silence count."""
        session = self.make(heartbeat_interval=60.0)
        self.clock.advance(50)
        session.activity()
        self.clock.advance(59.9)
        self.assertEqual(self.output.closed, [])
        self.clock.advance(0.1)
        self.assertEqual(self.output.closed, [(1000, "no data for 60s")])

    def test_activity_keeps_alive(self) -> None:
        """activity(), which the protocol calls for every frame, not only Heartbeats, keeps it alive."""
        session = self.make(heartbeat_interval=60.0)
        for _ in range(10):
            self.clock.advance(45)
            session.activity()
            session.frame_received(frame(2, "s", "StatusNotification", {}))
        self.assertEqual(self.output.closed, [])
        self.clock.advance(60)
        self.assertEqual(len(self.output.closed), 1)

    def test_envelopes_are_not_activity(self) -> None:
        """Messages to the charge point do not prove it is alive."""
        session = self.make(heartbeat_interval=60.0, max_queue=100)
        for n in range(5):
            self.clock.advance(11)
            session.envelope_received(dn_call(f"c{n}"))
        self.clock.advance(5)
        self.assertEqual(len(self.output.closed), 1)

    def test_boot_interval_lengthens_deadline(self) -> None:
        """The interval of an Accepted BootNotification replaces the default, counted from the reply."""
        session = self.make(heartbeat_interval=60.0)
        self.clock.advance(10)
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        self.clock.advance(5)
        session.envelope_received(dn_result("b1", BOOT_ACCEPTED))
        self.clock.advance(299.9)  # t = 314.9, 299.9s after the reply
        self.assertEqual(self.output.closed, [])
        self.clock.advance(0.1)
        self.assertEqual(self.output.closed, [(1000, "no data for 300s")])

    def test_boot_interval_shortens_deadline(self) -> None:
        """A shorter interval brings the deadline forward."""
        session = self.make(heartbeat_interval=60.0, heartbeat_backoff=2)
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        session.envelope_received(dn_result("b1", {**BOOT_ACCEPTED, "interval": 10}))
        self.clock.advance(19.9)
        self.assertEqual(self.output.closed, [])
        self.clock.advance(0.1)
        self.assertEqual(self.output.closed, [(1000, "no data for 20s")])

    def test_boot_interval_shorter_than_silence(self) -> None:
        """A new interval shorter than the silence so far still gives the charge point a full interval."""
        session = self.make(heartbeat_interval=60.0)
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        self.clock.advance(30)
        session.envelope_received(dn_result("b1", {**BOOT_ACCEPTED, "interval": 20}))
        self.clock.advance(19.9)
        self.assertEqual(self.output.closed, [])
        self.clock.advance(0.1)
        self.assertEqual(self.output.closed, [(1000, "no data for 20s")])

    def test_interval_zero_disables(self) -> None:
        """An interval of 0 disables the liveness check."""
        self.make(heartbeat_interval=0.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10**6)
        self.assertEqual(self.output.closed, [])

    def test_boot_interval_enables(self) -> None:
        """With checks disabled by default, an Accepted BootNotification interval enables them."""
        session = self.make(heartbeat_interval=0.0)
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        session.envelope_received(dn_result("b1", {**BOOT_ACCEPTED, "interval": 30}))
        self.clock.advance(30)
        self.assertEqual(self.output.closed, [(1000, "no data for 30s")])

    def test_one_liveness_timer(self) -> None:
        """However often the interval changes, one liveness timer is pending."""
        session = self.make(heartbeat_interval=60.0)
        for n, interval in enumerate((100, 200, 50, 400)):
            session.frame_received(frame(2, f"b{n}", "BootNotification", BOOT))
            session.envelope_received(dn_result(f"b{n}", {**BOOT_ACCEPTED, "interval": interval}))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(session.heartbeat_interval, 400.0)

    def test_fractional_times_never_spin(self) -> None:
        """Activity at fractional times never re-arms the liveness timer with no time passing.

        Comparing ``now - last`` with the limit once disagreed by an ulp with the deadline
        ``last + limit`` the timer was armed for (activity at 4.1s, interval 60s): the timer
        re-armed itself with a zero delay forever and Clock.advance never returned.
        """
        for interval in (60.0, 30.0, 10.1, 0.7):
            for tenths in range(1, int(interval * 10)):
                activity_at = tenths / 10
                clock = _SpinGuardClock()
                output = RecordingOutput()
                settings = SessionSettings(heartbeat_interval=interval)
                session = ChargePointSession("CP", settings, output, output, clock, self.metrics)
                session.start()
                clock.advance(activity_at)
                session.activity()
                clock.advance(interval - activity_at)
                self.assertEqual(output.closed, [])
                clock.advance(activity_at)
                clock.advance(1e-6)
                self.assertEqual(
                    output.closed, [(1000, f"no data for {interval:g}s")], (interval, activity_at)
                )
                self.assertEqual(clock.getDelayedCalls(), [])

    def test_not_started_no_timer(self) -> None:
        """A session arms no timer before start()."""
        output = self.output
        session = ChargePointSession("CP9", SessionSettings(), output, output, self.clock, self.metrics)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        session.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        session.end("done")


class EndTests(SessionTestCase):
    """end() answers every downstream Call that will never be answered and stops all timers."""

    def test_end_publishes_errors(self) -> None:
        """The Call in flight and every queued Call get a GenericError envelope, in order."""
        session = self.make()
        session.envelope_received(dn_call("c1", "Reset"))
        session.envelope_received(dn_call("c2", "ClearCache", {}))
        session.envelope_received(dn_call("c3", "Reset"))
        session.end("connection lost")
        self.assertEqual(
            self.output.published,
            [
                CallError(
                    "c1",
                    "GenericError",
                    "charge point disconnected (connection lost) before replying",
                    {},
                    "Reset",
                ),
                CallError(
                    "c2",
                    "GenericError",
                    "not delivered: charge point disconnected (connection lost)",
                    {},
                    "ClearCache",
                ),
                CallError(
                    "c3",
                    "GenericError",
                    "not delivered: charge point disconnected (connection lost)",
                    {},
                    "Reset",
                ),
            ],
        )
        self.assertIsNone(session.in_flight)
        self.assertEqual(session.queue_length, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_end_cancels_timers(self) -> None:
        """After end() neither the reply timer nor the liveness timer fires."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        session.end("bye")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(1000)
        self.assertEqual(self.output.closed, [])
        self.assertEqual(len(self.output.published), 1)

    def test_end_idempotent(self) -> None:
        """A second end() publishes nothing more."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        session.end("a")
        session.end("b")
        self.assertEqual(len(self.output.published), 1)

    def test_end_with_nothing_pending(self) -> None:
        """Ending an idle session publishes nothing."""
        session = self.make()
        session.end("bye")
        self.assertEqual(self.output.published, [])

    def test_reply_after_end_sends_nothing(self) -> None:
        """A reply arriving after end() is still published but releases no queued Call."""
        session = self.make()
        session.envelope_received(dn_call("c1"))
        session.envelope_received(dn_call("c2"))
        in_flight = session.in_flight
        session.end("replaced")
        session.frame_received(frame(3, in_flight.unique_id, {"status": "Accepted"}))
        self.assertEqual(len(self.output.sent), 1)
        self.assertEqual(self.output.published[-1], CallResult("c1", {"status": "Accepted"}, None))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_boot_after_end_arms_nothing(self) -> None:
        """An interval change after end() arms no timer."""
        session = self.make()
        session.end("gone")
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        session.envelope_received(dn_result("b1", BOOT_ACCEPTED))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LongSessionTests(SessionTestCase):
    """Sessions of hundreds of messages keep their invariants."""

    def test_many_round_trips(self) -> None:
        """150 rounds of Call up, reply down, command down, reply up, with time passing."""
        session = self.make(_schemas(), heartbeat_interval=60.0, check_upstream=True, check_dnstream=True)
        session.frame_received(frame(2, "boot", "BootNotification", BOOT))
        session.envelope_received(dn_result("boot", BOOT_ACCEPTED))
        for n in range(150):
            self.clock.advance(20)
            session.activity()  # as the protocol does for every frame
            session.frame_received(frame(2, f"up{n}", "Heartbeat", {}))
            session.envelope_received(dn_result(f"up{n}", {"currentTime": "2024-01-01T00:00:00Z"}))
            session.envelope_received(dn_call(f"dn{n}", "Reset", {"type": "Soft"}))
            self.clock.advance(1)
            session.activity()
            session.frame_received(frame(3, f"dn{n}", {"status": "Accepted"}))
        self.assertEqual(self.output.closed, [])
        self.assertEqual(len(self.output.sent), 1 + 300)
        self.assertEqual(len(self.output.published), 1 + 300)
        self.assertEqual(self.output.published[-1], CallResult("dn149", {"status": "Accepted"}, "Reset"))
        self.assertEqual(self.output.sent[-2], frame(3, "up149", {"currentTime": "2024-01-01T00:00:00Z"}))
        self.assertEqual(self.metrics.total("frames_received"), 1 + 300)
        self.assertEqual(self.metrics.total("schema_rejected"), 0)
        self.assertEqual(self.metrics.total("replies_unsolicited"), 0)
        self.assertIsNone(session.in_flight)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertLessEqual(len(session._pending_upstream), session_module._PENDING_UPSTREAM_LIMIT)

    def test_burst_of_commands(self) -> None:
        """120 commands at once with max_queue 100: 101 sent in order one by one, 19 refused."""
        session = self.make(max_queue=100, heartbeat_interval=0.0)
        for n in range(120):
            session.envelope_received(
                dn_call(f"c{n:03}", "TriggerMessage", {"requestedMessage": "Heartbeat"})
            )
        self.assertEqual(session.queue_length, 100)
        self.assertEqual([m.unique_id for m in self.output.published], [f"c{n:03}" for n in range(101, 120)])
        self.assertEqual(self.metrics.value("dnstream_dropped", action="TriggerMessage"), 19)
        for n in range(101):
            self.assertEqual(len(self.output.sent), n + 1)
            self.assertEqual(json.loads(self.output.sent[-1])[1], f"c{n:03}")
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            session.frame_received(frame(3, f"c{n:03}", {"status": "Accepted"}))
        self.assertEqual(len(self.output.sent), 101)
        replies = self.output.published[19:]
        self.assertEqual(
            replies, [CallResult(f"c{n:03}", {"status": "Accepted"}, "TriggerMessage") for n in range(101)]
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeouts_drain_queue(self) -> None:
        """A charge point that never replies: every queued Call times out in turn, one per reply_timeout."""
        session = self.make(max_queue=100, heartbeat_interval=0.0, reply_timeout=5.0)
        for n in range(101):
            session.envelope_received(dn_call(f"c{n}"))
        self.clock.pump([5.0] * 101)
        self.assertEqual(len(self.output.sent), 101)
        self.assertEqual([m.unique_id for m in self.output.published], [f"c{n}" for n in range(101)])
        self.assertTrue(all(m.code == "GenericError" for m in self.output.published))
        self.assertEqual(self.metrics.total("reply_timeouts"), 101)
        self.assertIsNone(session.in_flight)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class MetricLabelTests(SessionTestCase):
    """Metric labels take an Action only from OCPP 1.6's list: a peer cannot grow the series."""

    def test_unknown_actions_labelled_other(self) -> None:
        """Thousands of made-up Actions from a charge point are counted under one label, "other"."""
        session = self.make()
        for n in range(2000):
            session.frame_received(frame(2, f"u{n}", f"Made{n}", {}))
        session.frame_received(frame(2, "h", "Heartbeat", {}))
        self.assertEqual(self.metrics.value("frames_received", action="other"), 2000)
        self.assertEqual(self.metrics.value("frames_received", action="Heartbeat"), 1)
        families = [f for f in self.metrics.registry.collect() if f.name == "ocppgw_frames_received"]
        series = [sample for family in families for sample in family.samples]
        self.assertEqual(len(series), 2)

    def test_label_rule(self) -> None:
        """An OCPP 1.6 Action is itself, no Action is "-", anything else "other"."""
        self.assertEqual(
            [
                messages.action_label(a)
                for a in ("BootNotification", "SignCertificate", None, "", "x", "heartbeat")
            ],
            ["BootNotification", "SignCertificate", "-", "-", "other", "other"],
        )
