"""ChargePointSession's bounds on what it sends and echoes (issue 9 items 1, 2 and 6)."""

from __future__ import annotations

from typing import Any

from twisted.logger import formatEvent, globalLogPublisher

from ocppgw.core import messages
from ocppgw.core.messages import Call, CallError
from tests.test_session import SessionTestCase, dn_call, dn_result, envelope, frame

LIMIT = 200  # bytes of one frame to the charge point, in these tests


class OutgoingSizeTests(SessionTestCase):
    """A downstream message whose frame is over max_outgoing_frame_size is answered upstream, not sent."""

    def test_oversized_call_lets_the_queue_move_on(self) -> None:
        """An oversized Call is refused at once; the next one goes out with its reply timer armed."""
        session = self.make(max_outgoing_frame_size=LIMIT)
        session.envelope_received(dn_call("small1"))
        session.envelope_received(dn_call("big", "DataTransfer", {"vendorId": "v", "data": "x" * LIMIT}))
        session.envelope_received(dn_call("small2"))
        self.assertEqual(self.output.sent, ['[2,"small1","Reset",{"type":"Soft"}]'])
        session.frame_received(frame(3, "small1", {"status": "Accepted"}))
        self.assertEqual(self.output.sent[1:], ['[2,"small2","Reset",{"type":"Soft"}]'])
        self.assertEqual(session.in_flight, Call("small2", "Reset", {"type": "Soft"}))
        errors = [m for m in self.output.published if isinstance(m, CallError)]
        self.assertEqual(len(errors), 1)
        self.assertEqual(
            (errors[0].unique_id, errors[0].action, errors[0].code), ("big", "DataTransfer", "GenericError")
        )
        self.assertIn("max_outgoing_frame_size", errors[0].description)
        self.assertEqual(self.metrics.value("outgoing_oversized", kind="Call"), 1)
        self.clock.advance(30)
        self.assertIsNone(session.in_flight)  # small2's reply timer was armed and fired

    def test_oversized_call_when_idle(self) -> None:
        """With nothing in flight, an oversized Call leaves nothing in flight and no timer behind."""
        session = self.make(max_outgoing_frame_size=LIMIT)
        session.envelope_received(dn_call("big", "DataTransfer", {"vendorId": "v", "data": "é" * LIMIT}))
        self.assertEqual(self.output.sent, [])
        self.assertIsNone(session.in_flight)
        self.assertEqual([c.func for c in self.clock.getDelayedCalls()], [session._check_liveness])
        session.envelope_received(dn_call("next"))
        self.assertEqual(self.output.sent, ['[2,"next","Reset",{"type":"Soft"}]'])

    def test_many_oversized_calls_queued(self) -> None:
        """A long queue of oversized Calls drains in one go without deep recursion."""
        session = self.make(max_outgoing_frame_size=LIMIT, max_queue=5000)
        session.envelope_received(dn_call("first"))
        for n in range(3000):
            session.envelope_received(
                dn_call(f"big{n}", "DataTransfer", {"vendorId": "v", "data": "x" * LIMIT})
            )
        session.envelope_received(dn_call("last"))
        session.frame_received(frame(3, "first", {}))
        self.assertEqual(self.output.sent[-1], '[2,"last","Reset",{"type":"Soft"}]')
        self.assertEqual(self.metrics.value("outgoing_oversized", kind="Call"), 3000)

    def test_oversized_result_and_error(self) -> None:
        """Oversized CallResults and CallErrors from the central system are answered on the error topic."""
        session = self.make(max_outgoing_frame_size=LIMIT)
        session.frame_received(frame(2, "b1", "DataTransfer", {"vendorId": "v"}))
        session.envelope_received(dn_result("b1", {"status": "Accepted", "data": "y" * LIMIT}))
        session.envelope_received(
            envelope(MessageTypeId=4, UniqueId="e1", ErrorCode="InternalError", ErrorDescription="z" * LIMIT)
        )
        self.assertEqual(self.output.sent, [])
        errors = [m for m in self.output.published if isinstance(m, CallError)]
        self.assertEqual(
            [(e.unique_id, e.action, e.code) for e in errors],
            [("b1", "DataTransfer", "GenericError"), ("e1", None, "GenericError")],
        )
        self.assertEqual(self.metrics.value("outgoing_oversized", kind="CallResult"), 1)
        self.assertEqual(self.metrics.value("outgoing_oversized", kind="CallError"), 1)

    def test_exactly_at_the_limit_is_sent(self) -> None:
        """A frame of exactly max_outgoing_frame_size bytes (multi-byte characters counted) is sent."""
        text = messages.encode_frame(Call("u", "DataTransfer", {"vendorId": "é" * 50}))
        size = len(text.encode("utf-8"))
        session = self.make(max_outgoing_frame_size=size)
        session.envelope_received(dn_call("u", "DataTransfer", {"vendorId": "é" * 50}))
        self.assertEqual(self.output.sent, [text])
        session = self.make(max_outgoing_frame_size=size - 1)
        session.envelope_received(dn_call("u", "DataTransfer", {"vendorId": "é" * 50}))
        self.assertEqual(self.output.sent, [text])

    def test_own_answer_too_large_is_dropped(self) -> None:
        """The gateway's own CallError to a charge point over the limit: counted, not sent, not published."""
        session = self.make(max_outgoing_frame_size=40)
        session.frame_received('[2,"u1","Heartbeat",NaN]')
        self.assertEqual((self.output.sent, self.output.published), ([], []))
        self.assertEqual(self.metrics.value("outgoing_oversized", kind="CallError"), 1)


class UniqueIdLengthTests(SessionTestCase):
    """A Call's UniqueId over max_unique_id_length is answered without being repeated."""

    def test_long_unique_id_not_echoed(self) -> None:
        """FormationViolation with UniqueId "-1"; the Call is not published."""
        session = self.make(max_unique_id_length=36)
        long_id = "L" * 5000
        session.frame_received(frame(2, long_id, "Heartbeat", {}))
        self.assertEqual(
            self.output.sent, ['[4,"-1","FormationViolation","UniqueId longer than 36 characters",{}]']
        )
        self.assertEqual(self.output.published, [])
        session.frame_received(frame(2, "L" * 36, "Heartbeat", {}))
        self.assertEqual(self.output.published, [Call("L" * 36, "Heartbeat", {})])

    def test_long_unique_id_in_a_broken_frame(self) -> None:
        """A long UniqueId at the start of a frame that is not valid JSON is not echoed either."""
        session = self.make(max_unique_id_length=36)
        session.frame_received('[2,"' + "L" * 100_000 + '","Heartbeat",NaN]')
        session.frame_received('[2,"' + "\\u004c" * 37 + '","Heartbeat",NaN]')
        expected = '[4,"-1","FormationViolation","UniqueId longer than 36 characters",{}]'
        self.assertEqual(self.output.sent, [expected, expected])

    def test_long_unique_id_of_a_reply_is_kept(self) -> None:
        """Replies are never answered, so their UniqueIds (the central system's) have no limit."""
        session = self.make(max_unique_id_length=36)
        session.envelope_received(dn_call("C" * 100))
        session.frame_received(frame(3, "C" * 100, {"status": "Accepted"}))
        self.assertEqual(len(self.output.published), 1)
        self.assertEqual(self.output.published[0].unique_id, "C" * 100)


class RecoveredUniqueIdTests(SessionTestCase):
    """Frames the codec cannot read whole are answered when they start with a Call's UniqueId."""

    def test_answered(self) -> None:
        """Deep nesting, NaN, Infinity, an out-of-range number and a BOM: a CallError with the UniqueId."""
        session = self.make()
        deep = "[" * 70 + "]" * 70
        for n, body in enumerate(
            [deep, "NaN", "-Infinity", "1e999", None],
        ):
            text = f'[2,"r{n}","DataTransfer",{{"vendorId":"v","data":{body}}}]'
            if body is None:
                text = '\ufeff[2,"r4","Heartbeat",{}]'
            session.frame_received(text)
        self.assertEqual(
            [messages.decode_frame(t).unique_id for t in self.output.sent], [f"r{n}" for n in range(5)]
        )
        self.assertTrue(all('"FormationViolation"' in t for t in self.output.sent))
        self.assertEqual(self.output.published, [])

    def test_replies_never_answered(self) -> None:
        """A broken CallResult or CallError is dropped: never a CallError to a reply."""
        session = self.make()
        session.frame_received('[3,"r",{"v":NaN}]')
        session.frame_received('[4,"r","GenericError","",{"v":Infinity}]')
        self.assertEqual(self.output.sent, [])


class LogBoundTests(SessionTestCase):
    """No log line of a session carries more than 1 KB of what the charge point sent."""

    def test_hostile_input_logged_bounded(self) -> None:
        """Huge frames, UniqueIds and actions, with newlines, make log lines of bounded size on one line."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        schemas = self._schemas()
        session = self.make(schemas, check_upstream=True, max_unique_id_length=None)
        big = "\n" + "é" * 100_000
        session.frame_received(frame(2, "u" + big, "A" + big, {}))
        session.frame_received(frame(2, "u" + big, "BootNotification", {"chargePointVendor": big}))
        session.frame_received(frame(3, "r" + big, {}, 7))
        session.frame_received("[2," + big)
        self.output.accept = False
        session.frame_received(frame(2, "v" + big, "Heartbeat", {}))
        session.envelope_received(envelope(MessageTypeId=9, UniqueId="w" + big))
        self.assertGreaterEqual(len(events), 6)
        for event in events:
            line = formatEvent(event)
            self.assertNotIn("\n", line)
            self.assertLessEqual(len(line.encode("utf-8")), 1024, line)

    @staticmethod
    def _schemas() -> Any:
        from tests.test_session import _schemas

        return _schemas()
