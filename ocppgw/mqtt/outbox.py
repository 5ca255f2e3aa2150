"""What the gateway publishes on its way to the broker: a bounded buffer with ordered replay.

paho keeps every QoS 1/2 message it accepted (until the broker acknowledges it,
across reconnects of the same client) and re-sends them in order after CONNACK.
While the reactor does not see a usable connection, new messages of every QoS
are held here, in order, and handed to paho once it has re-sent what it kept:
otherwise they would overtake it (see ``Outbox.flush``).  The bound counts
both, held and unacknowledged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paho.mqtt import client as mqtt
from twisted.logger import Logger

from ocppgw.metrics import Metrics
from ocppgw.mqtt.paho_client import resending

# paho numbers every PUBLISH and SUBSCRIBE with a 16-bit id and refuses an id still in use, so at
# most this many messages may wait for an acknowledgement.
MID_SPACE_LIMIT = 60000

_QOS_LEVELS = (0, 1, 2)

# Outcomes of handing one message to paho.
_SENT = "sent"
_NO_CONNECTION = "no_connection"
_REJECTED = "rejected"


def check_qos(qos: int) -> None:
    """ValueError unless ``qos`` is an MQTT QoS level."""
    if qos not in _QOS_LEVELS:
        raise ValueError(f"QoS must be 0, 1 or 2, got {qos!r}")


@dataclass(frozen=True, slots=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    """The link's outgoing messages: sent straight to paho while connected and nothing older waits,
    else held; counted until the broker acknowledges them (QoS>0) or they are sent (QoS 0).

    Topics are not checked here: the core validates each one once, when it renders it
    (``ocppgw.core.topics.topic_problem``), and paho refuses wildcards itself."""

    flush_retry_interval = 0.01
    flush_retry_limit = 200
    """After CONNACK, how often and how many times to check that paho has re-sent what it kept."""

    def __init__(
        self, reactor: Any, limit: int, metrics: Metrics, log: Logger, settled: Callable[[], None]
    ) -> None:
        """``settled`` is called after held messages were handed to paho (the count may have fallen)."""
        self.limit = limit
        self._reactor = reactor
        self._metrics = metrics
        self._log = log
        self._settled = settled
        self.client: Any = None  # the paho client, once the link has made it
        self.pending: deque[_Outgoing] = deque()  # accepted, not yet handed to paho
        self.unacked: set[int] = set()  # mids of QoS>0 messages paho holds until PUBACK/PUBCOMP
        self.refused = 0  # refusals not yet reported in a summary line
        self.awaited = False  # room() answered 0: the link tells its room observers when there is room
        self._ready = False  # connected and nothing older is waiting: publish may go straight to paho
        self._connected = False
        self._closed = False
        self._flush_call: Any = None
        self._flush_tries = 0

    def outstanding(self) -> int:
        """Accepted messages not yet acknowledged (QoS>0) or not yet sent."""
        return len(self.unacked) + len(self.pending)

    def room(self) -> int:
        """How many more messages ``publish`` accepts now at least; 0 marks the room as awaited."""
        room = 0 if self._closed else self.limit - self.outstanding()
        if room <= 0:
            self.awaited = True
            return 0
        return room

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        """Accept a message (True) or refuse it (False: stopped, or the buffer is full)."""
        if self._closed:
            self._refuse(topic, qos, "the link is stopped")
            return False
        direct = self._ready and not self.pending and self.client.is_connected()
        if not direct:
            check_qos(qos)  # a direct send is checked by paho, which raises the same ValueError
        if (qos > 0 or not direct) and self.outstanding() >= self.limit:
            self._refuse(topic, qos, "the buffer is full")
            return False
        if direct:
            outcome = self._send(topic, payload, qos, retain)
            if outcome == _REJECTED:
                self._refuse(topic, qos, "paho refused it")
                return False
            if outcome == _SENT:
                return True
            self._ready = False  # QoS 0 without a connection: hold it and everything after it
        self.pending.append(_Outgoing(topic, payload, qos, retain))
        return True

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> str:
        """Hand one message to paho."""
        info = self.client.publish(topic, payload, qos, retain)
        rc = info.rc
        if rc == mqtt.MQTT_ERR_SUCCESS or (rc == mqtt.MQTT_ERR_NO_CONN and qos > 0):
            # Without a connection paho keeps a QoS>0 message and sends it after CONNACK.
            if qos > 0:
                self.unacked.add(info.mid)
            self._metrics.inc("mqtt_published")
            return _SENT
        if rc == mqtt.MQTT_ERR_NO_CONN:
            return _NO_CONNECTION  # paho drops QoS 0 without a connection
        self._log.error(
            "paho refused a message on {topic}: {error}", topic=topic, error=mqtt.error_string(rc)
        )
        return _REJECTED

    def _refuse(self, topic: str, qos: int, why: str) -> None:
        self._metrics.inc("mqtt_publish_refused")
        self.refused += 1
        if self.refused == 1:
            self._log.warn(
                "refusing MQTT messages ({why}): {outstanding} accepted messages outstanding, limit "
                "{limit}; first refused on {topic} (QoS {qos})",
                why=why,
                outstanding=self.outstanding(),
                limit=self.limit,
                topic=topic,
                qos=qos,
            )

    def report_refusals(self) -> None:
        """Once there is room again, say how many messages were refused while there was none."""
        if self.refused and self.outstanding() < self.limit:
            self._log.warn("refused {count} MQTT messages while the buffer was full", count=self.refused)
            self.refused = 0

    # -- the connection as the reactor sees it -------------------------------------

    def connected(self) -> None:
        """CONNACK: hand the held messages to paho once it has re-sent its own."""
        self._connected = True
        self._flush_tries = 0
        self.flush()

    def disconnected(self) -> None:
        """The connection is gone: hold new messages from now on."""
        self._connected = False
        self._ready = False
        self._cancel_flush()

    def close(self) -> None:
        """The link is stopping for good: refuse new messages, send no held ones."""
        self._closed = True
        self.disconnected()

    def _cancel_flush(self) -> None:
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None

    def flush(self) -> None:
        """Hand held messages to paho, in order, once paho has re-sent its own.

        paho calls on_connect before it re-sends what it kept, and a message given to it before that
        would overtake them."""
        self._flush_call = None
        if not self._connected:
            return
        if resending(self.client):
            self._flush_tries += 1
            if self._flush_tries < self.flush_retry_limit:
                self._flush_call = self._reactor.callLater(self.flush_retry_interval, self.flush)
                return
            self._log.warn("paho did not re-send its kept messages in time; sending held messages anyway")
        pending = self.pending
        while pending:
            message = pending.popleft()
            try:
                outcome = self._send(message.topic, message.payload, message.qos, message.retain)
            except ValueError as e:  # paho refuses the topic: the core rendered a bad one
                self._log.error(
                    "paho refused a held message on {topic}: {error}", topic=message.topic, error=e
                )
                outcome = _REJECTED
            if outcome == _NO_CONNECTION:
                pending.appendleft(message)  # the next connect sends it
                return
            if outcome == _REJECTED:
                self._metrics.inc("mqtt_publish_dropped")
        self._ready = True
        self.report_refusals()
        self._settled()
