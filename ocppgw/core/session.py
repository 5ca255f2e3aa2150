"""Per-charge-point OCPP-J state, without I/O.

A session owns what OCPP-J asks of the central-system side of one WebSocket:
one downstream Call in flight with a reply timeout and a bounded queue behind
it, immediate forwarding of replies to the charge point's own Calls, CallErrors
for bad frames, schema checks, and the liveness deadline. Time comes from an
injected clock; frames go to the charge point's ``IChargePoint`` and
envelopes to its ``UpstreamOutput``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ocppgw.core import messages
from ocppgw.core.messages import Call, CallError, CallResult, EnvelopeError, FrameError, Message, action_label
from ocppgw.core.peertext import FRAME_BYTES, ID_BYTES, clip
from ocppgw.core.ports import IChargePoint
from ocppgw.core.schemas import Kind, SchemaRegistry, Violation
from ocppgw.core.timers import cancel
from ocppgw.metrics import Metrics

# Bounded memories of recent UniqueIds, so a hostile peer cannot grow them.
_PENDING_UPSTREAM_LIMIT = 64
_EXPIRED_DOWNSTREAM_LIMIT = 32


class UpstreamOutput(Protocol):
    """Where a session's messages for the central system go (``ocppgw.core.upstream.Upstream``)."""

    def publish_call(self, call: Call) -> bool:
        """Publish a Call; False when the gateway cannot accept it now."""

    def publish_result(self, result: CallResult) -> bool:
        """Publish a CallResult; False when the gateway cannot accept it now."""

    def publish_error(self, error: CallError) -> bool:
        """Publish a CallError; False when the gateway cannot accept it now."""


@dataclass(frozen=True, slots=True)
class SessionSettings:
    heartbeat_interval: float = 60.0
    heartbeat_backoff: int = 1
    max_queue: int = 100
    reply_timeout: float = 30.0
    check_upstream: bool = False
    check_dnstream: bool = False
    max_outgoing_frame_size: int = 0  # bytes of one frame to the charge point; 0: no limit
    max_unique_id_length: int | None = None  # of a charge point's Call, echoed in answers


class ChargePointSession:
    """The OCPP-J state of one connected charge point."""

    _log = Logger()

    def __init__(
        self,
        cid: str,
        settings: SessionSettings,
        connection: IChargePoint,
        upstream: UpstreamOutput,
        clock: IReactorTime,
        metrics: Metrics,
        schemas: SchemaRegistry | None = None,
    ) -> None:
        self.cid = cid
        self.heartbeat_interval = settings.heartbeat_interval
        self._settings = settings
        self._connection = connection
        self._upstream = upstream
        self._last_activity = clock.seconds()
        self._clock = clock
        self._metrics = metrics
        self._schemas = schemas
        self._queue: deque[Call] = deque()
        self._in_flight: Call | None = None
        self._in_flight_since = 0.0
        self._reply_timer: IDelayedCall | None = None
        self._pending_upstream: OrderedDict[str, str] = OrderedDict()
        self._expired_downstream: OrderedDict[str, str] = OrderedDict()
        self._liveness_timer: IDelayedCall | None = None
        self._ended = False
        self.dropped = 0  # downstream Calls dropped: queue full (the API's mqueue_dropped)

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Arm the liveness deadline."""
        self._last_activity = self._clock.seconds()
        self._arm_liveness()

    def end(self, reason: str) -> None:
        """Stop timers and answer every downstream Call that will now never be answered."""
        if self._ended:
            return
        self._ended = True
        cancel(self._liveness_timer)
        cancel(self._reply_timer)
        self._liveness_timer = self._reply_timer = None
        undelivered = list(self._queue)
        self._queue.clear()
        if self._in_flight is not None:
            call, self._in_flight = self._in_flight, None
            self._publish_gateway_error(call, f"charge point disconnected ({reason}) before replying")
        for call in undelivered:
            self._publish_gateway_error(call, f"not delivered: charge point disconnected ({reason})")

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> Call | None:
        return self._in_flight

    # -- liveness --------------------------------------------------------

    def activity(self) -> None:
        """Bytes arrived from the charge point (a frame, a pong): it is alive."""
        self._last_activity = self._clock.seconds()

    def _liveness_limit(self) -> float:
        return self.heartbeat_interval * max(1, self._settings.heartbeat_backoff)

    def _arm_liveness(self) -> None:
        cancel(self._liveness_timer)
        self._liveness_timer = None
        limit = self._liveness_limit()
        if limit <= 0 or self._ended:
            return
        due = max(0.0, self._last_activity + limit - self._clock.seconds())
        self._liveness_timer = self._clock.callLater(due, self._check_liveness)

    def _check_liveness(self) -> None:
        self._liveness_timer = None
        limit = self._liveness_limit()
        now = self._clock.seconds()
        silent = now - self._last_activity
        # The same float expression as the deadline _arm_liveness aims at: comparing ``silent``
        # with ``limit`` instead can disagree by an ulp and re-arm with a zero delay forever.
        if now >= self._last_activity + limit:
            self._metrics.inc("liveness_closes")
            self._log.info(
                "charge point {cid} silent for {silent:.0f}s (limit {limit:.0f}s): closing",
                cid=self.cid,
                silent=silent,
                limit=limit,
            )
            self._connection.close(1000, f"no data for {limit:g}s")
            return
        self._arm_liveness()

    def _set_heartbeat_interval(self, interval: float) -> None:
        if interval == self.heartbeat_interval:
            return
        self._log.info("heartbeat interval of {cid} now {interval}s", cid=self.cid, interval=interval)
        self.heartbeat_interval = interval
        self._last_activity = self._clock.seconds()  # a full new interval, as the reference restarts it
        self._arm_liveness()

    # -- upstream: frames from the charge point --------------------------

    def frame_received(self, text: str) -> None:
        """Handle one text frame from the charge point (its bytes were already noted by ``activity``)."""
        try:
            message = messages.decode_frame(text, self._settings.max_unique_id_length)
        except FrameError as e:
            self._bad_frame(e, text)
            return
        self._metrics.inc("frames_received", action=action_label(getattr(message, "action", None)))
        if isinstance(message, Call):
            self._upstream_call(message)
        else:
            self._upstream_reply(message)

    def _bad_frame(self, error: FrameError, text: str) -> None:
        self._metrics.inc("frames_invalid", code=error.code)
        self._log.warn(
            "invalid frame from {cid} (unique_id {unique_id}): {code} {reason}; frame {frame}",
            cid=self.cid,
            unique_id=None if error.unique_id is None else clip(error.unique_id, ID_BYTES),
            code=error.code, reason=clip(error.description), frame=clip(text, FRAME_BYTES),
        )
        if error.answerable and error.unique_id is not None:
            self._answer_error(error.unique_id, error.code, error.description)

    def _answer_error(self, unique_id: str, code: str, description: str) -> None:
        self._send(CallError(unique_id, code, description, {}), upstream=False)

    def _upstream_call(self, call: Call) -> None:
        if self._settings.check_upstream:
            violation = self._violation(call.action, "Request", call.payload, "upstream", call.unique_id)
            if violation is not None:
                self._answer_error(call.unique_id, violation.code, violation.description)
                return
        if not self._upstream.publish_call(call):
            self._metrics.inc("calls_refused", action=action_label(call.action))
            self._log.warn(
                "upstream buffer full: refusing {action} {unique_id} from {cid}",
                cid=self.cid, action=clip(call.action, ID_BYTES), unique_id=clip(call.unique_id, ID_BYTES),
            )
            self._answer_error(
                call.unique_id, messages.INTERNAL_ERROR, "Central system unreachable, try again later"
            )
            return
        self._remember(self._pending_upstream, call.unique_id, call.action, _PENDING_UPSTREAM_LIMIT)

    def _violation(
        self, action: str, kind: Kind, payload: Any, direction: str, unique_id: str
    ) -> Violation | None:
        """Check a payload against its schema; count and log a miss or a failure."""
        if self._schemas is None:
            return None
        if not self._schemas.has(action, kind):
            self._metrics.inc("schema_missing", action=action_label(action), kind=kind)
            return None
        violation = self._schemas.check(action, kind, payload)
        if violation is not None:
            self._metrics.inc("schema_rejected", direction=direction, action=action_label(action))
            self._log.warn(
                "schema rejected {direction} {action}{kind} for {cid} ({unique_id}): {code} {reason}",
                direction=direction,
                cid=self.cid,
                action=clip(action, ID_BYTES),
                kind=kind,
                unique_id=clip(unique_id, ID_BYTES),
                code=violation.code,
                reason=clip(violation.description),
            )
        return violation

    def _upstream_reply(self, reply: CallResult | CallError) -> None:
        in_flight = self._in_flight
        answered = in_flight is not None and reply.unique_id == in_flight.unique_id
        if answered:
            assert in_flight is not None
            action: str | None = in_flight.action
            self._metrics.observe(
                "downstream_round_trip_seconds",
                self._clock.seconds() - self._in_flight_since,
                action=action_label(in_flight.action),
            )
            cancel(self._reply_timer)
            self._reply_timer = None
            self._in_flight = None
        else:
            action = self._expired_downstream.pop(reply.unique_id, None)
            self._metrics.inc("replies_late" if action else "replies_unsolicited")
        if isinstance(reply, CallResult):
            violation = None
            if self._settings.check_upstream and action is not None:
                violation = self._violation(action, "Response", reply.payload, "upstream", reply.unique_id)
            if violation is not None:
                accepted = self._upstream.publish_error(
                    CallError(
                        reply.unique_id,
                        violation.code,
                        f"Invalid CallResult from charge point: {violation.description}",
                        {},
                        action,
                    )
                )
            else:
                accepted = self._upstream.publish_result(CallResult(reply.unique_id, reply.payload, action))
        else:
            accepted = self._upstream.publish_error(
                CallError(reply.unique_id, reply.code, reply.description, reply.details, action)
            )
        if not accepted:
            self._metrics.inc("replies_dropped")
            self._log.error(
                "upstream buffer full: reply {unique_id} from {cid} dropped",
                cid=self.cid,
                unique_id=clip(reply.unique_id, ID_BYTES),
            )
        if answered:
            self._send_next()

    # -- downstream: envelopes from the central system -------------------

    def envelope_received(self, data: bytes) -> None:
        """Handle one MQTT message published to this charge point's downstream topic."""
        if self._ended:
            return
        try:
            message = messages.decode_envelope(data)
        except EnvelopeError as e:
            self._metrics.inc("envelopes_invalid")
            self._log.warn(
                "invalid downstream envelope for {cid} (unique_id {unique_id}): {reason}",
                cid=self.cid,
                unique_id=None if e.unique_id is None else clip(e.unique_id, ID_BYTES),
                reason=clip(e.description),
            )
            if e.unique_id is not None:
                self._publish_error(
                    e.unique_id, None, messages.FORMATION_VIOLATION, f"Rejected by gateway: {e.description}"
                )
            return
        if isinstance(message, Call):
            self._downstream_call(message)
        elif isinstance(message, CallResult):
            self._downstream_result(message)
        else:
            self._pending_upstream.pop(message.unique_id, None)
            self._send(message)

    def _downstream_check(self, action: str | None, kind: Kind, message: Message, payload: Any) -> bool:
        """False (and a CallError envelope upstream) when a downstream message fails its schema."""
        if not self._settings.check_dnstream or action is None:
            return True
        violation = self._violation(action, kind, payload, "dnstream", message.unique_id)
        if violation is None:
            return True
        self._publish_error(message.unique_id, action, violation.code, f"Not sent: {violation.description}")
        return False

    def _downstream_result(self, result: CallResult) -> None:
        action = self._pending_upstream.pop(result.unique_id, None) or result.action
        if not self._downstream_check(action, "Response", result, result.payload):
            return
        if not self._send(CallResult(result.unique_id, result.payload, action)):
            return
        if self._is_accepted_boot(action, result.payload):
            interval = result.payload["interval"]
            if isinstance(interval, int | float) and not isinstance(interval, bool) and interval > 0:
                self._set_heartbeat_interval(float(interval))

    @staticmethod
    def _is_accepted_boot(action: str | None, payload: dict[str, Any]) -> bool:
        if payload.get("status") != "Accepted" or "interval" not in payload:
            return False
        return action in (None, "BootNotification")

    def _downstream_call(self, call: Call) -> None:
        if not self._downstream_check(call.action, "Request", call, call.payload):
            return
        if self._in_flight is None and not self._queue:
            self._send_call(call)
            return
        if len(self._queue) >= self._settings.max_queue:
            self._metrics.inc("dnstream_dropped", action=action_label(call.action))
            self.dropped += 1
            self._log.warn(
                "downstream queue for {cid} full ({limit}): dropped {action} {unique_id}",
                cid=self.cid,
                limit=self._settings.max_queue,
                action=clip(call.action, ID_BYTES),
                unique_id=clip(call.unique_id, ID_BYTES),
            )
            waiting = f"Not sent: downstream queue full ({self._settings.max_queue} calls waiting)"
            self._publish_error(call.unique_id, call.action, messages.GENERIC_ERROR, waiting)
            return
        self._queue.append(call)

    def _send_call(self, call: Call) -> None:
        """Send ``call`` and wait for its reply; one too large to send is answered upstream at once."""
        text = messages.encode_frame(call)
        if not self._fits(call, text, upstream=True):
            return
        self._in_flight = call
        self._in_flight_since = self._clock.seconds()
        self._reply_timer = self._clock.callLater(self._settings.reply_timeout, self._reply_timed_out)
        self._connection.send_text(text)

    def _send_next(self) -> None:
        # A loop, not recursion: a queue of Calls too large to send is answered in one go.
        while self._in_flight is None and self._queue and not self._ended:
            self._send_call(self._queue.popleft())

    def _send(self, message: CallResult | CallError, upstream: bool = True) -> bool:
        """Send a reply to the charge point unless its frame is over max_outgoing_frame_size."""
        text = messages.encode_frame(message)
        if not self._fits(message, text, upstream):
            return False
        self._connection.send_text(text)
        return True

    def _fits(self, message: Message, text: str, upstream: bool) -> bool:
        """Whether ``text`` may be sent; if not, count and log it, and when the message came from the
        central system (``upstream``) answer it on the error topic.

        Autobahn's own limit is lifted for what the gateway sends (it would raise), so this is where
        an outgoing frame is bounded."""
        limit = self._settings.max_outgoing_frame_size
        if limit <= 0 or len(text) * 4 <= limit:  # no character takes more than 4 bytes in UTF-8
            return True
        size = len(text.encode("utf-8", "surrogatepass"))
        if size <= limit:
            return True
        kind = type(message).__name__
        action = getattr(message, "action", None)
        self._metrics.inc("outgoing_oversized", kind=kind)
        self._log.warn(
            "{kind} {unique_id} ({action}) for {cid} not sent: {size} bytes, max_outgoing_frame_size {limit}",
            kind=kind, unique_id=clip(message.unique_id, ID_BYTES), action=action, cid=self.cid,
            size=size, limit=limit,
        )
        if upstream:
            too_large = f"Not sent: the frame of {size} bytes is over max_outgoing_frame_size ({limit} bytes)"
            self._publish_error(message.unique_id, action, messages.GENERIC_ERROR, too_large)
        return False

    def _reply_timed_out(self) -> None:
        self._reply_timer = None
        call, self._in_flight = self._in_flight, None
        if call is None:
            return
        self._metrics.inc("reply_timeouts", action=action_label(call.action))
        self._log.warn(
            "{cid} did not reply to {action} {unique_id} within {timeout}s",
            cid=self.cid,
            action=clip(call.action, ID_BYTES),
            unique_id=clip(call.unique_id, ID_BYTES),
            timeout=self._settings.reply_timeout,
        )
        self._remember(self._expired_downstream, call.unique_id, call.action, _EXPIRED_DOWNSTREAM_LIMIT)
        self._publish_gateway_error(
            call, f"Charge point did not reply within {self._settings.reply_timeout:g}s (timed out)"
        )
        self._send_next()

    # -- helpers ---------------------------------------------------------

    def _publish_gateway_error(self, call: Call, description: str) -> None:
        self._publish_error(call.unique_id, call.action, messages.GENERIC_ERROR, description)

    def _publish_error(self, unique_id: str, action: str | None, code: str, description: str) -> None:
        if not self._upstream.publish_error(CallError(unique_id, code, description, {}, action)):
            self._metrics.inc("replies_dropped")
            self._log.error(
                "upstream buffer full: gateway error for {unique_id} ({cid}) dropped",
                cid=self.cid,
                unique_id=clip(unique_id, ID_BYTES),
            )

    @staticmethod
    def _remember(memory: OrderedDict[str, str], key: str, value: str, limit: int) -> None:
        memory[key] = value
        memory.move_to_end(key)
        while len(memory) > limit:
            memory.popitem(last=False)
