"""The gateway's one connection to the MQTT broker.

``PahoLink`` holds what does not depend on who drives paho's network loop:
buffering, ordered replay after an outage, subscriptions, dispatch, stop.
Everything paho reports (connects, disconnects, messages, acknowledgements) is
appended to a thread-safe deque and handled, in order, in the reactor thread.

``PahoThreadLink`` runs paho-mqtt's network loop in paho's own thread, which
also reconnects with back-off.  At most one ``callFromThread`` is pending at
any time and it drains the whole deque, so a burst of messages costs one
hand-off, not one per message.  ``ocppgw.mqtt.reactor_link.PahoReactorLink``
drives the same client from the reactor instead.  Handlers and observers run
only in the reactor thread.

Publishing happens in the reactor thread: paho's ``publish`` only queues the
packet and wakes its loop.  Accepted QoS 1/2 messages are kept by paho (its
``_out_messages``) until the broker acknowledges them, across reconnects of
the same client, and are re-sent in order after CONNACK.  While the reactor
does not see a usable connection, new messages of every QoS are held here, in
order, and handed to paho once it has re-sent what it kept (see ``_flush``).
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zope.interface
from paho.mqtt import client as mqtt
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ocppgw.config import MqttSection
from ocppgw.core.ports import ConnectionObserver, Handler, IBrokerLink, Will
from ocppgw.core.topics import filter_problem, is_wildcard, topic_problem
from ocppgw.metrics import Metrics
from ocppgw.tls.broker import BrokerContext, TlsConfigError, broker_context


@dataclass(frozen=True)
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class _Subscription:
    qos: int
    handler: Handler


# Events handed from paho's thread to the reactor, as tuples led by one of these tags.
_CONNECT = "connect"  # (tag, failed, reason)
_CONNECT_FAIL = "connect_fail"  # (tag,)
_ATTEMPT = "attempt"  # (tag,): paho is about to open a connection
_DISCONNECT = "disconnect"  # (tag, reason)
_MESSAGE = "message"  # (tag, topic or None when not UTF-8, payload)
_ACK = "ack"  # (tag, mid)
_SUBACK = "suback"  # (tag, mid, ((index, reason), ...) of the refused filters)
_TLS_REFUSED = "tls_refused"  # (tag, reason): handshake or hostname check failed, before CONNECT

# Outcomes of handing one message to paho.
_SENT = "sent"
_NO_CONNECTION = "no_connection"
_REJECTED = "rejected"

# paho numbers every PUBLISH and SUBSCRIBE with a 16-bit id and refuses an id still in use, so at
# most this many messages may wait for an acknowledgement.
_MID_SPACE_LIMIT = 60000


def _reason(reason_code: Any) -> str:
    """A paho reason code as ``"Name (value)"`` for logs."""
    value = getattr(reason_code, "value", reason_code)
    return f"{reason_code} ({value})"


def _check_qos(qos: int) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS must be 0, 1 or 2, got {qos!r}")


def _check_topic(topic: str) -> None:
    problem = topic_problem(topic)
    if problem is not None:
        raise ValueError(problem)


def _check_filter(topic_filter: str) -> None:
    problem = filter_problem(topic_filter)
    if problem is not None:
        raise ValueError(problem)


def _default_client_factory(**kwargs: Any) -> Any:
    return mqtt.Client(**kwargs)


@zope.interface.implementer(IBrokerLink)
class PahoLink:
    """``IBrokerLink`` over one paho-mqtt client; subclasses decide who runs paho's network loop.

    Call every method from the reactor thread.  ``client_factory`` takes paho ``Client``'s
    keyword arguments and returns a client; tests inject a fake.
    """

    _log = Logger()

    max_inflight = 0
    """QoS>0 messages paho keeps in flight at once (0: no limit, paho's default is 20).

    Our own bound (``max_buffered_messages``) already limits what is unacknowledged, MQTT 3.1.1 has
    no receive maximum, and with a limit paho walks every unacknowledged message on each PUBACK."""

    subscribe_chunk = 100
    """Topic filters per SUBSCRIBE packet when re-subscribing after a reconnect."""

    max_batch = 10000
    """Events handled per reactor turn; a longer backlog continues in a later turn."""

    flush_retry_interval = 0.01
    flush_retry_limit = 200
    """After CONNACK, how often and how many times to check that paho has re-sent what it kept."""

    def __init__(
        self,
        reactor: Any,
        config: MqttSection,
        metrics: Metrics,
        will: Will | None = None,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        self._reactor = reactor
        self._config = config
        self._metrics = metrics
        self._will = will
        self._client_factory = client_factory or _default_client_factory
        self._client: Any = None
        self._tls_context: BrokerContext | None = None
        # "new" -> "started" -> "stopping" (waiting for acks) -> "disconnecting" (DISCONNECT sent,
        # paho's thread ending) -> "stopped"
        self._state = "new"

        self.connected = False
        self._ever_connected = False
        self._connect_failures = 0
        self._tls_refusals = 0  # in a row, since the last connect
        self._observers: list[ConnectionObserver] = []

        # paho thread -> reactor thread
        self._events: deque[tuple[Any, ...]] = deque()
        self._drain_lock = threading.Lock()
        self._drain_scheduled = False
        self._driving = False  # the reactor thread is inside paho and drains when paho returns

        # outgoing
        self._limit = min(config.max_buffered_messages, _MID_SPACE_LIMIT)
        self._pending: deque[_Outgoing] = deque()  # accepted, not yet handed to paho
        self._unacked: set[int] = set()  # mids of QoS>0 messages paho holds until PUBACK/PUBCOMP
        self._ready = False  # connected and nothing older is waiting: publish may go straight to paho
        self._flush_call: Any = None
        self._flush_tries = 0
        self._refused = 0  # refusals not yet reported in a summary line

        # incoming
        self._exact: dict[str, _Subscription] = {}
        self._wildcards: dict[str, _Subscription] = {}
        self._wildcard_items: tuple[tuple[str, _Subscription], ...] = ()
        self._subscribe_mids: dict[int, list[str]] = {}

        # stop
        self._stop_timeout: float = 0.0
        self._stop_call: Any = None
        self._stop_waiters: list[Deferred[None]] = []

        if config.max_buffered_messages > _MID_SPACE_LIMIT:
            self._log.warn(
                "[mqtt] max_buffered_messages = {configured} is more than paho's message ids allow; "
                "using {limit}",
                configured=config.max_buffered_messages,
                limit=_MID_SPACE_LIMIT,
            )
        metrics.gauge(
            "mqtt_connected", lambda: 1.0 if self.connected else 0.0, "1 while connected to the broker"
        )
        metrics.gauge(
            "mqtt_outstanding",
            lambda: float(self._outstanding()),
            "accepted messages not yet acknowledged by the broker (QoS>0) or not yet sent",
        )
        metrics.gauge(
            "mqtt_held", lambda: float(len(self._pending)), "accepted messages held while disconnected"
        )

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        if self._state != "new":
            if self._state == "started":
                return
            raise RuntimeError("a stopped MQTT link cannot be started again")
        config = self._config
        client = self._client_factory(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if self._will is not None:
            will = self._will
            client.will_set(will.topic, will.payload, will.qos, will.retain)
        context = broker_context(config, lambda reason: self._post((_TLS_REFUSED, reason)))
        self._tls_context = context
        if context is not None:
            client.tls_set_context(context)
            client.tls_insecure_set(True)  # the hostname is checked by broker_context's sockets instead
        client.reconnect_delay_set(config.reconnect_delay_min, config.reconnect_delay_max)
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)  # unlimited: our own bound applies
        client.on_pre_connect = self._paho_pre_connect
        client.on_socket_open = self._paho_socket_open
        client.on_connect = self._paho_connect
        client.on_connect_fail = self._paho_connect_fail
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        if hasattr(client, "on_raw_message"):  # the reactor link's client: no MQTTMessage per message
            client.on_raw_message = self._paho_raw_message
            client.on_raw_ack = self._paho_raw_ack
        client.on_publish = self._paho_publish
        client.on_subscribe = self._paho_subscribe
        self._client = client
        self._state = "started"
        self._log.info(
            "connecting to MQTT broker {host}:{port} as {client_id}{user}",
            host=config.host,
            port=config.port,
            client_id=config.client_id,
            user="" if config.username is None else f" (user {config.username})",
        )
        self._start_network(client)

    def _start_network(self, client: Any) -> None:
        """Begin connecting ``client`` and keep it connected, with back-off, until ``_stop_network``."""
        raise NotImplementedError

    def _stop_network(self, client: Any) -> Deferred[None]:
        """Send DISCONNECT if connected, end the network loop; fires once paho is idle for good."""
        raise NotImplementedError

    def stop(self, timeout: float) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            d.callback(None)
            return d
        self._stop_waiters.append(d)
        if self._state in ("stopping", "disconnecting"):
            return d
        self._state = "stopping"
        self._stop_timeout = timeout
        if self._outstanding() == 0:
            self._shutdown()
        else:
            self._log.info(
                "MQTT link stopping: waiting up to {timeout}s for {count} messages to be acknowledged",
                timeout=timeout,
                count=self._outstanding(),
            )
            self._stop_call = self._reactor.callLater(timeout, self._shutdown)
        return d

    def _check_stop(self) -> None:
        if self._state == "stopping" and self._stop_call is not None and self._outstanding() == 0:
            self._shutdown()

    def _shutdown(self) -> None:
        """Disconnect now, whether or not everything was acknowledged, and stop paho's thread."""
        if self._stop_call is not None:
            if self._stop_call.active():
                self._stop_call.cancel()
            self._stop_call = None
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        lost = self._outstanding()
        if lost:
            self._metrics.inc("mqtt_lost_on_stop", lost)
            self._log.warn(
                "MQTT link stopping after {timeout}s: {unacked} messages not acknowledged by the broker "
                "and {held} never sent; disconnecting anyway",
                timeout=self._stop_timeout,
                unacked=len(self._unacked),
                held=len(self._pending),
            )
        self._state = "disconnecting"
        self._ready = False
        d = self._stop_network(self._client)
        d.addErrback(lambda f: self._log.failure("stopping the MQTT network loop failed", f))
        d.addBoth(self._stopped)

    def _stopped(self, _ignored: object) -> None:
        self._drain()  # the last events: the DISCONNECT we sent, late acknowledgements
        if self.connected:  # no on_disconnect arrived, for example the socket was already gone
            self._set_disconnected("link stopped")
        self._state = "stopped"
        self._log.info("MQTT link stopped")
        waiters, self._stop_waiters = self._stop_waiters, []
        for d in waiters:
            d.callback(None)

    # -- paho's callbacks, in whatever thread runs paho --------------------------

    def _post(self, event: tuple[Any, ...]) -> None:
        """Hand an event to the reactor; called in any thread, never blocks."""
        self._events.append(event)
        if self._driving:
            return
        with self._drain_lock:
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        self._reactor.callFromThread(self._drain)

    def _paho_pre_connect(self, client: Any, userdata: Any) -> None:
        self._post((_ATTEMPT,))

    def _paho_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        """No Nagle: paho writes each packet on its own, and a PUBACK held back behind an unacknowledged
        PUBLISH would wait for the broker's delayed ACK (tens of milliseconds)."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            self._log.warn("cannot set TCP_NODELAY on the MQTT connection: {error}", error=e)

    def _paho_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._post((_CONNECT, bool(getattr(reason_code, "is_failure", False)), _reason(reason_code)))

    def _paho_connect_fail(self, client: Any, userdata: Any) -> None:
        self._post((_CONNECT_FAIL,))

    def _paho_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._post((_DISCONNECT, _reason(reason_code)))

    def _paho_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = None
        self._post((_MESSAGE, topic, message.payload))

    def _paho_raw_message(self, topic: bytes, payload: bytes) -> None:
        try:
            text: str | None = topic.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if self._driving and not self._events:
            # the reactor thread, inside paho, nothing earlier waiting: handled now, in order
            try:
                self._dispatch(text, payload)
            except Exception:
                self._log.failure("handling MQTT event {event!r} failed", event=_MESSAGE)
        else:
            self._post((_MESSAGE, text, payload))

    def _paho_raw_ack(self, mid: int) -> None:
        if self._driving and self._state == "started" and not self._refused:
            # the reactor thread, inside paho, and no stop or refusal report waits for the count to drop
            self._unacked.discard(mid)
        else:
            self._post((_ACK, mid))

    def _paho_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._post((_ACK, mid))

    def _paho_subscribe(
        self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        refused = tuple(
            (index, _reason(code))
            for index, code in enumerate(reason_codes)
            if getattr(code, "is_failure", False)
        )
        self._post((_SUBACK, mid, refused))

    # -- reactor thread: events ------------------------------------------------

    def _drain(self) -> None:
        """Handle the events paho posted so far, in order."""
        with self._drain_lock:
            self._drain_scheduled = False
        events = self._events
        for _ in range(self.max_batch):
            try:
                event = events.popleft()
            except IndexError:
                break
            try:
                self._handle(event)
            except Exception:
                self._log.failure("handling MQTT event {event!r} failed", event=event[0])
        else:
            with self._drain_lock:
                again = bool(events) and not self._drain_scheduled
                if again:
                    self._drain_scheduled = True
            if again:
                self._reactor.callFromThread(self._drain)  # let other work run first
        self._report_refusals()
        self._check_stop()

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == _MESSAGE:
            self._dispatch(event[1], event[2])
        elif kind == _ACK:
            self._unacked.discard(event[1])
        elif kind == _CONNECT:
            self._on_connect(event[1], event[2])
        elif kind == _DISCONNECT:
            self._on_disconnect(event[1])
        elif kind == _CONNECT_FAIL:
            self._on_connect_fail()
        elif kind == _SUBACK:
            self._on_suback(event[1], event[2])
        elif kind == _TLS_REFUSED:
            self._on_tls_refused(event[1])
        elif kind == _ATTEMPT:
            self._metrics.inc("mqtt_connect_attempts")

    def _on_connect(self, failed: bool, reason: str) -> None:
        config = self._config
        if failed:
            self._metrics.inc("mqtt_connect_refused")
            self._log.error(
                "MQTT broker {host}:{port} refused the connection of {client_id}: {reason}",
                host=config.host,
                port=config.port,
                client_id=config.client_id,
                reason=reason,
            )
            return
        if self._state in ("disconnecting", "stopped"):
            return
        if self._ever_connected:
            self._metrics.inc("mqtt_reconnects")
        self._ever_connected = True
        self.connected = True
        self._log.info(
            "connected to MQTT broker {host}:{port} as {client_id}",
            host=config.host,
            port=config.port,
            client_id=config.client_id,
            failed_attempts=self._connect_failures,
        )
        self._connect_failures = 0
        self._tls_refusals = 0
        self._resubscribe()
        self._flush_tries = 0
        self._flush()
        self._notify(True)

    def _on_disconnect(self, reason: str) -> None:
        self._ready = False
        self._subscribe_mids.clear()  # no SUBACK comes for these any more
        if self._flush_call is not None:
            self._flush_call.cancel()
            self._flush_call = None
        if self.connected:
            self._set_disconnected(reason)

    def _set_disconnected(self, reason: str) -> None:
        self.connected = False
        config = self._config
        if self._state in ("disconnecting", "stopped"):
            self._log.info(
                "disconnected from MQTT broker {host}:{port}: {reason}",
                host=config.host,
                port=config.port,
                reason=reason,
            )
        else:
            self._log.warn(
                "connection to MQTT broker {host}:{port} lost: {reason}; reconnecting "
                "({unacked} messages await acknowledgement)",
                host=config.host,
                port=config.port,
                reason=reason,
                unacked=len(self._unacked),
            )
        self._notify(False)

    def _on_tls_refused(self, reason: str) -> None:
        """One line for the first refusal in a row (paho retries with back-off); every one counted."""
        self._tls_refusals += 1
        self._metrics.inc("mqtt_tls_refused")
        if self._tls_refusals == 1:
            config = self._config
            self._log.error(
                "TLS to MQTT broker {host}:{port} refused: {reason}; retrying",
                host=config.host,
                port=config.port,
                reason=reason,
            )

    def _on_connect_fail(self, error: str | None = None) -> None:
        """``error``: why, where it is known (paho's own loop does not say)."""
        self._connect_failures += 1
        self._metrics.inc("mqtt_connect_failures")
        if self._connect_failures == 1 and not self._tls_refusals:
            config = self._config
            self._log.warn(
                "cannot reach MQTT broker {host}:{port}{because}; retrying every {low}s to {high}s",
                host=config.host,
                port=config.port,
                because="" if error is None else f" ({error})",
                error=error,
                low=config.reconnect_delay_min,
                high=config.reconnect_delay_max,
            )

    def _notify(self, connected: bool) -> None:
        for observer in list(self._observers):
            try:
                observer(connected)
            except Exception:
                self._log.failure(
                    "MQTT connection observer {observer!r} failed", observer=observer, connected=connected
                )

    # -- reactor thread: publishing ----------------------------------------

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        _check_topic(topic)
        _check_qos(qos)
        if self._state in ("disconnecting", "stopped"):
            self._refuse(topic, qos, "the link is stopped")
            return False
        direct = self._ready and not self._pending and self._client.is_connected()
        if (qos > 0 or not direct) and self._outstanding() >= self._limit:
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
        self._pending.append(_Outgoing(topic, payload, qos, retain))
        return True

    def _outstanding(self) -> int:
        return len(self._unacked) + len(self._pending)

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool) -> str:
        """Hand one message to paho."""
        info = self._client.publish(topic, payload, qos, retain)
        rc = info.rc
        if rc == mqtt.MQTT_ERR_SUCCESS or (rc == mqtt.MQTT_ERR_NO_CONN and qos > 0):
            # Without a connection paho keeps a QoS>0 message and sends it after CONNACK.
            if qos > 0:
                self._unacked.add(info.mid)
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
        self._refused += 1
        if self._refused == 1:
            self._log.warn(
                "refusing MQTT messages ({why}): {outstanding} accepted messages outstanding, limit "
                "{limit}; first refused on {topic} (QoS {qos})",
                why=why,
                outstanding=self._outstanding(),
                limit=self._limit,
                topic=topic,
                qos=qos,
            )

    def _report_refusals(self) -> None:
        """Once there is room again, say how many messages were refused while there was none."""
        if self._refused and self._outstanding() < self._limit:
            self._log.warn("refused {count} MQTT messages while the buffer was full", count=self._refused)
            self._refused = 0

    def _paho_resending(self) -> bool:
        """Whether paho still has to re-send QoS>0 messages it kept from an earlier connection.

        paho calls on_connect before it re-sends them, and a message given to it before that would
        overtake them.
        """
        messages = getattr(self._client, "_out_messages", None)
        mutex = getattr(self._client, "_out_message_mutex", None)
        if messages is None or mutex is None:
            return False
        with mutex:
            return any(m.qos > 0 and m.state == mqtt.mqtt_ms_publish for m in messages.values())

    def _flush(self) -> None:
        """Hand held messages to paho, in order, once paho has re-sent its own."""
        self._flush_call = None
        if not self.connected or self._state in ("disconnecting", "stopped"):
            return
        if self._paho_resending():
            self._flush_tries += 1
            if self._flush_tries < self.flush_retry_limit:
                self._flush_call = self._reactor.callLater(self.flush_retry_interval, self._flush)
                return
            self._log.warn("paho did not re-send its kept messages in time; sending held messages anyway")
        pending = self._pending
        while pending:
            message = pending.popleft()
            outcome = self._send(message.topic, message.payload, message.qos, message.retain)
            if outcome == _NO_CONNECTION:
                pending.appendleft(message)  # the next connect sends it
                return
            if outcome == _REJECTED:
                self._metrics.inc("mqtt_publish_dropped")
        self._ready = True
        self._report_refusals()
        self._check_stop()

    # -- reactor thread: subscriptions ---------------------------------------

    def subscribe(self, topic_filter: str, qos: int, handler: Handler) -> None:
        _check_filter(topic_filter)
        _check_qos(qos)
        table = self._wildcards if is_wildcard(topic_filter) else self._exact
        previous = table.get(topic_filter)
        table[topic_filter] = _Subscription(qos, handler)
        self._wildcard_items = tuple(self._wildcards.items())
        if self.connected and (previous is None or previous.qos != qos):
            self._send_subscribe([(topic_filter, qos)])

    def unsubscribe(self, topic_filter: str) -> None:
        table = self._wildcards if is_wildcard(topic_filter) else self._exact
        if table.pop(topic_filter, None) is None:
            return
        self._wildcard_items = tuple(self._wildcards.items())
        if self.connected:
            self._client.unsubscribe(topic_filter)

    def _resubscribe(self) -> None:
        entries = [(f, s.qos) for f, s in self._exact.items()]
        entries.extend((f, s.qos) for f, s in self._wildcards.items())
        for start in range(0, len(entries), self.subscribe_chunk):
            self._send_subscribe(entries[start : start + self.subscribe_chunk])

    def _send_subscribe(self, entries: list[tuple[str, int]]) -> None:
        rc, mid = self._client.subscribe(entries)
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self._subscribe_mids[mid] = [f for f, _ in entries]
        # otherwise the connection is gone: the next connect subscribes again

    def _on_suback(self, mid: int, refused: tuple[tuple[int, str], ...]) -> None:
        filters = self._subscribe_mids.pop(mid, None)
        if filters is None:
            return
        for index, reason in refused:
            topic_filter = filters[index] if index < len(filters) else "?"
            self._metrics.inc("mqtt_subscribe_refused")
            self._log.error(
                "MQTT broker refused the subscription to {topic_filter}: {reason}",
                topic_filter=topic_filter,
                reason=reason,
            )

    def _dispatch(self, topic: str | None, payload: bytes) -> None:
        self._metrics.inc("mqtt_received")
        if topic is None:
            self._metrics.inc("mqtt_unroutable")
            self._log.warn("dropped an MQTT message whose topic is not UTF-8")
            return
        matched = False
        subscription = self._exact.get(topic)
        if subscription is not None:
            matched = True
            self._call(topic, topic, subscription, payload)
        for topic_filter, subscription in self._wildcard_items:
            if mqtt.topic_matches_sub(topic_filter, topic):
                matched = True
                self._call(topic_filter, topic, subscription, payload)
        if not matched:
            self._metrics.inc("mqtt_unroutable")
            self._log.debug("dropped an MQTT message on {topic}: no subscription matches", topic=topic)

    def _call(self, topic_filter: str, topic: str, subscription: _Subscription, payload: bytes) -> None:
        try:
            subscription.handler(topic, payload)
        except Exception:
            self._metrics.inc("mqtt_handler_errors")
            self._log.failure(
                "handler for {topic_filter} failed on a message on {topic}",
                topic_filter=topic_filter,
                topic=topic,
            )

    # -- observers -----------------------------------------------------------

    def add_connection_observer(self, observer: ConnectionObserver) -> None:
        self._observers.append(observer)

    # -- TLS files -----------------------------------------------------------

    def reload_tls(self) -> list[str]:
        context = self._tls_context
        if context is None:
            return []
        try:
            context.reload(self._config)
        except TlsConfigError as e:
            return [f"[mqtt] {e.key}: {e.reason}; kept the previous files"]
        return []


class PahoThreadLink(PahoLink):
    """paho's network loop in paho's own thread (``loop_start``), which also reconnects with back-off."""

    def _start_network(self, client: Any) -> None:
        config = self._config
        client.connect_async(config.host, config.port, config.keepalive)
        client.loop_start()

    def _stop_network(self, client: Any) -> Deferred[None]:
        client.disconnect()
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), client.loop_stop)
