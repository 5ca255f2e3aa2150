"""The gateway's one connection to the MQTT broker, whoever drives paho's network loop.

``PahoLink`` holds what does not depend on that: the paho client's set-up, start
and stop (waiting for the broker's acknowledgements), the connection state and
its observers.  Everything paho reports reaches it in order, in the reactor
thread, through ``ocppgw.mqtt.events``; what is published goes through
``ocppgw.mqtt.outbox`` (bounded buffer, ordered replay after an outage), what
arrives through ``ocppgw.mqtt.subscriptions`` (filters, dispatch).

Two subclasses run paho's loop: ``ocppgw.mqtt.thread_loop.PahoThreadLink`` in
paho's own thread, ``ocppgw.mqtt.reactor_loop.PahoReactorLink`` in the reactor.
Every public method, handler and observer runs in the reactor thread.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import zope.interface
from paho.mqtt import client as mqtt
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from ocppgw.config import MqttSection
from ocppgw.core.ports import ConnectionObserver, Handler, IBrokerLink, RoomObserver, Will
from ocppgw.core.timers import cancel
from ocppgw.metrics import Metrics
from ocppgw.mqtt.events import (
    ACK,
    ATTEMPT,
    CONNECT,
    CONNECT_FAIL,
    DISCONNECT,
    MESSAGE,
    SUBACK,
    TLS_REFUSED,
    Event,
    EventQueue,
)
from ocppgw.mqtt.outbox import MID_SPACE_LIMIT, Outbox
from ocppgw.mqtt.subscriptions import Subscriptions
from ocppgw.tls.broker import BrokerContext, broker_context
from ocppgw.tls.pem import TlsConfigError


def _default_client_factory(**kwargs: Any) -> Any:
    return mqtt.Client(**kwargs)


@zope.interface.implementer(IBrokerLink)
class PahoLink:
    """``IBrokerLink`` over one paho-mqtt client; subclasses decide who runs paho's network loop.

    Call every method from the reactor thread.  ``client_factory`` takes paho ``Client``'s
    keyword arguments and returns a client; tests inject a fake.
    """

    _log = Logger()

    _event_queue = EventQueue
    """What carries paho's callbacks to the reactor thread; a driver may hand over a subclass."""

    max_inflight = 0
    """QoS>0 messages paho keeps in flight at once (0: no limit, paho's default is 20).

    Our own bound (``max_buffered_messages``) already limits what is unacknowledged, MQTT 3.1.1 has
    no receive maximum, and with a limit paho walks every unacknowledged message on each PUBACK."""

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
        self._room_observers: list[RoomObserver] = []

        self._queue = self._event_queue(reactor, self._handle, self._drained, self._log)
        self._outbox = Outbox(
            reactor, min(config.max_buffered_messages, MID_SPACE_LIMIT), metrics, self._log, self._settled
        )
        self._subscriptions = Subscriptions(metrics, self._log)
        self._resubscribes: dict[str, IDelayedCall] = {}  # refused filters: their next SUBSCRIBE

        # stop
        self._stop_timeout: float = 0.0
        self._stop_call: Any = None
        self._stop_waiters: list[Deferred[None]] = []

        if config.max_buffered_messages > MID_SPACE_LIMIT:
            self._log.warn(
                "[mqtt] max_buffered_messages = {configured} is more than paho's message ids allow; "
                "using {limit}",
                configured=config.max_buffered_messages,
                limit=MID_SPACE_LIMIT,
            )
        outbox = self._outbox
        metrics.gauge("mqtt_connected", lambda: 1.0 if self.connected else 0.0)
        metrics.gauge("mqtt_outstanding", lambda: float(outbox.outstanding()))
        metrics.gauge("mqtt_held", lambda: float(len(outbox.pending)))

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
        context = broker_context(config, lambda reason: self._queue.post((TLS_REFUSED, reason)))
        self._tls_context = context
        if context is not None:
            client.tls_set_context(context)
            client.tls_insecure_set(True)  # the hostname is checked by broker_context's sockets instead
        client.reconnect_delay_set(config.reconnect_delay_min, config.reconnect_delay_max)
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)  # unlimited: our own bound applies
        self._queue.install(client)
        client.on_socket_open = self._paho_socket_open
        self._client = self._outbox.client = client
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
        self._room_check()  # what waits for room is sent before the link decides it is done
        if self._outbox.outstanding() == 0:
            self._shutdown()
        else:
            self._log.info(
                "MQTT link stopping: waiting up to {timeout}s for {count} messages to be acknowledged",
                timeout=timeout,
                count=self._outbox.outstanding(),
            )
            self._stop_call = self._reactor.callLater(timeout, self._shutdown)
        return d

    def _settled(self) -> None:
        self._room_check()
        self._check_stop()

    def _room_check(self) -> None:
        """Tell the room observers, if ``room`` answered 0 since, that there is room again."""
        outbox = self._outbox
        if not outbox.awaited or outbox.room() == 0:
            return
        outbox.awaited = False
        for observer in list(self._room_observers):
            try:
                observer()
            except Exception:
                self._log.failure("MQTT room observer {observer!r} failed", observer=observer)

    def _check_stop(self) -> None:
        if self._state == "stopping" and self._stop_call is not None and self._outbox.outstanding() == 0:
            self._shutdown()

    def _shutdown(self) -> None:
        """Disconnect now, whether or not everything was acknowledged, and stop paho's thread."""
        if self._stop_call is not None:
            if self._stop_call.active():
                self._stop_call.cancel()
            self._stop_call = None
        for later in self._resubscribes.values():
            cancel(later)
        self._resubscribes.clear()
        outbox = self._outbox
        outbox.close()
        lost = outbox.outstanding()
        if lost:
            self._metrics.inc("mqtt_lost_on_stop", lost)
            self._log.warn(
                "MQTT link stopping after {timeout}s: {unacked} messages not acknowledged by the broker "
                "and {held} never sent; disconnecting anyway",
                timeout=self._stop_timeout,
                unacked=len(outbox.unacked),
                held=len(outbox.pending),
            )
        self._state = "disconnecting"
        d = self._stop_network(self._client)
        d.addErrback(lambda f: self._log.failure("stopping the MQTT network loop failed", f))
        d.addBoth(self._stopped)

    def _stopped(self, _ignored: object) -> None:
        self._queue.drain()  # the last events: the DISCONNECT we sent, late acknowledgements
        if self.connected:  # no on_disconnect arrived, for example the socket was already gone
            self._set_disconnected("link stopped")
        self._state = "stopped"
        self._log.info("MQTT link stopped")
        waiters, self._stop_waiters = self._stop_waiters, []
        for d in waiters:
            d.callback(None)

    def _paho_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        """No Nagle: paho writes each packet on its own, and a PUBACK held back behind an unacknowledged
        PUBLISH would wait for the broker's delayed ACK (tens of milliseconds)."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            self._log.warn("cannot set TCP_NODELAY on the MQTT connection: {error}", error=e)

    # -- reactor thread: events ------------------------------------------------

    def _drained(self) -> None:
        self._outbox.report_refusals()
        self._settled()

    def _handle(self, event: Event) -> None:
        kind = event[0]
        if kind == MESSAGE:
            self._subscriptions.dispatch(event[1], event[2])
        elif kind == ACK:
            self._outbox.unacked.discard(event[1])
        elif kind == CONNECT:
            self._on_connect(event[1], event[2])
        elif kind == DISCONNECT:
            self._on_disconnect(event[1])
        elif kind == CONNECT_FAIL:
            self._on_connect_fail()
        elif kind == SUBACK:
            for topic_filter, delay in self._subscriptions.on_suback(event[1], event[2]):
                cancel(self._resubscribes.get(topic_filter))
                later = self._reactor.callLater(delay, self._subscribe_again, topic_filter)
                self._resubscribes[topic_filter] = later
        elif kind == TLS_REFUSED:
            self._on_tls_refused(event[1])
        elif kind == ATTEMPT:
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
        self._subscriptions.resubscribe(self._client)
        self._outbox.connected()
        self._notify(True)

    def _on_disconnect(self, reason: str) -> None:
        self._outbox.disconnected()
        self._subscriptions.awaiting.clear()  # no SUBACK comes for these any more
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
                unacked=len(self._outbox.unacked),
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

    # -- reactor thread: publishing and subscriptions -----------------------

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        return self._outbox.publish(topic, payload, qos, retain)

    def room(self) -> int:
        return self._outbox.room()

    def subscribe(self, topic_filter: str, qos: int, handler: Handler) -> None:
        if self._subscriptions.add(topic_filter, qos, handler) and self.connected:
            self._subscriptions.send(self._client, [(topic_filter, qos)])

    def _subscribe_again(self, topic_filter: str) -> None:
        """After a refusal: unless the filter was dropped meanwhile or the link is down (the next
        connect subscribes to every filter anyway)."""
        self._resubscribes.pop(topic_filter, None)
        qos = self._subscriptions.qos(topic_filter)
        if qos is not None and self.connected:
            self._subscriptions.send(self._client, [(topic_filter, qos)])

    def unsubscribe(self, topic_filter: str) -> None:
        if self._subscriptions.remove(topic_filter) and self.connected:
            self._client.unsubscribe(topic_filter)

    @property
    def subscribing(self) -> bool:
        """Whether a SUBSCRIBE awaits its SUBACK: until then the broker may not yet route to the
        filter (RabbitMQ binds a queue, NATS creates a JetStream consumer)."""
        return bool(self._subscriptions.awaiting)

    # -- observers -----------------------------------------------------------

    def add_connection_observer(self, observer: ConnectionObserver) -> None:
        self._observers.append(observer)

    def add_room_observer(self, observer: RoomObserver) -> None:
        self._room_observers.append(observer)

    # -- TLS files -----------------------------------------------------------

    def reload_tls(self) -> list[tuple[str, str]]:
        context = self._tls_context
        if context is None:
            return []
        try:
            context.reload(self._config)
        except TlsConfigError as e:
            return [(e.key, f"{e.reason}; kept the previous files")]
        return []
