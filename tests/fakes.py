"""In-memory stand-ins for the gateway's collaborators, for unit tests."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paho.mqtt import client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ocppgw.core.ports import ConnectionObserver, Handler, IBrokerLink
from ocppgw.core.topics import topic_matches, topic_problem
from ocppgw.mqtt.outbox import check_qos


@dataclass(frozen=True)
class Published:
    """One message handed to ``FakeMqttLink.publish``."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@implementer(IBrokerLink)
class FakeMqttLink:
    """An ``IBrokerLink`` that records what the gateway asks of it.

    ``deliver`` plays the broker delivering a message, ``set_connected`` a
    (re)connect or disconnect; with ``refuse_publishes`` set, ``publish``
    answers False as a full buffer would; with ``room_left`` set, the buffer
    has that much room left, and ``give_room`` frees some and, as the real link,
    tells the room observers only if ``room`` answered 0 since they were last told.
    Unlike the real link it checks each topic it is given, so that a core
    publishing to a topic it did not validate
    fails its tests; it matches topics as the real link does (``topic_matches``).

    ``set_aside``: topics and filters holding one of these texts (the cluster's control traffic, for
    tests about something else) are recorded in ``aside`` and ``aside_subscriptions`` instead.
    """

    def __init__(self, connected: bool = False, set_aside: tuple[str, ...] = ()) -> None:
        self.connected = connected
        self.set_aside = set_aside
        self.aside: list[Published] = []
        self.broker: FakeBroker | None = None
        self.aside_subscriptions: dict[str, tuple[int, Handler]] = {}
        self.started = 0
        self.stop_timeouts: list[float] = []
        self.published: list[Published] = []
        self.refused: list[Published] = []
        self.refuse_publishes = False
        self.room_left: int | None = None  # None: no bound
        self.room_observers: list[Callable[[], None]] = []
        self.room_awaited = False
        self.subscriptions: dict[str, tuple[int, Handler]] = {}
        self.subscribe_calls: list[tuple[str, int]] = []
        self.unsubscribe_calls: list[str] = []
        self.observers: list[ConnectionObserver] = []
        self.tls_reloads = 0
        self.tls_problems: list[tuple[str, str]] = []  # what reload_tls answers

    # -- IBrokerLink -------------------------------------------------------

    def start(self) -> None:
        self.started += 1

    def stop(self, timeout: float) -> Deferred[None]:
        self.stop_timeouts.append(timeout)
        self.set_connected(False)
        return succeed(None)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        check_qos(qos)
        problem = topic_problem(topic)
        if problem is not None:
            raise ValueError(problem)
        message = Published(topic, payload, qos, retain)
        refused = self.refuse_publishes or self.room_left == 0
        if self.broker is not None and not refused:
            self.broker.receive(message)
        if self._aside(topic) and not refused:
            self.aside.append(message)
            return True
        if refused:
            self.refused.append(message)
            return False
        if self.room_left is not None:
            self.room_left -= 1
        self.published.append(message)
        return True

    def room(self) -> int:
        room = 0 if self.refuse_publishes else 1_000_000 if self.room_left is None else self.room_left
        if room == 0:
            self.room_awaited = True
        return room

    def add_room_observer(self, observer: Callable[[], None]) -> None:
        self.room_observers.append(observer)

    def subscribe(self, topic_filter: str, qos: int, handler: Handler) -> None:
        check_qos(qos)
        if self.broker is not None:
            self.broker.subscribed(self, topic_filter)
        if self._aside(topic_filter):
            self.aside_subscriptions[topic_filter] = (qos, handler)
            return
        self.subscribe_calls.append((topic_filter, qos))
        self.subscriptions[topic_filter] = (qos, handler)

    def _aside(self, topic: str) -> bool:
        return any(text in topic for text in self.set_aside)

    def unsubscribe(self, topic_filter: str) -> None:
        if self.aside_subscriptions.pop(topic_filter, None) is not None:
            return
        self.unsubscribe_calls.append(topic_filter)
        self.subscriptions.pop(topic_filter, None)

    def add_connection_observer(self, observer: ConnectionObserver) -> None:
        self.observers.append(observer)

    def reload_tls(self) -> list[tuple[str, str]]:
        self.tls_reloads += 1
        return list(self.tls_problems)

    # -- test helpers ----------------------------------------------------

    def deliver(self, topic: str, payload: bytes) -> int:
        """Hand a message to every matching subscription's handler; how many handlers ran."""
        every = [*self.subscriptions.items(), *self.aside_subscriptions.items()]
        handlers = [h for f, (_, h) in every if topic_matches(f, topic)]
        for handler in handlers:
            handler(topic, payload)
        return len(handlers)

    def give_room(self, count: int) -> None:
        """``count`` buffered messages were acknowledged: tell the room observers."""
        self.room_left = (self.room_left or 0) + count
        if self.room_awaited and self.room_left > 0:
            self.room_awaited = False
            for observer in list(self.room_observers):
                observer()

    def set_connected(self, connected: bool) -> None:
        """Report a connect (every call with True is a new connect) or a disconnect to the observers."""
        was = self.connected
        self.connected = connected
        if connected or was:
            for observer in list(self.observers):
                observer(connected)

    def published_to(self, topic: str) -> list[Published]:
        """Every accepted message published to ``topic``, oldest first."""
        return [m for m in self.published if m.topic == topic]

    def clear(self) -> None:
        """Forget the publishes recorded so far."""
        del self.published[:]
        del self.refused[:]
        del self.aside[:]


class FakeBroker:
    """FakeMqttLinks joined as one broker joins its clients: what a link publishes reaches every
    joined link's matching subscriptions when ``flush()`` runs (so tests order races), retained
    messages are kept and sent to each new subscription, and ``kill`` plays a dead client's will."""

    def __init__(self) -> None:
        self.links: list[FakeMqttLink] = []
        self.retained: dict[str, bytes] = {}
        self.queue: list[tuple[FakeMqttLink | None, str, bytes]] = []

    def join(self, link: FakeMqttLink) -> FakeMqttLink:
        link.broker = self
        self.links.append(link)
        return link

    def receive(self, message: Published) -> None:
        if message.retain:
            if message.payload:
                self.retained[message.topic] = message.payload
            else:
                self.retained.pop(message.topic, None)
        self.queue.append((None, message.topic, message.payload))

    def subscribed(self, link: FakeMqttLink, topic_filter: str) -> None:
        for topic, payload in self.retained.items():
            if topic_matches(topic_filter, topic):
                self.queue.append((link, topic, payload))

    def kill(self, link: FakeMqttLink, will: Any = None) -> None:
        """``link`` is gone without DISCONNECT: it hears nothing more; its will (a ``Will``) goes out."""
        self.links.remove(link)
        link.broker = None
        if will is not None:
            self.receive(Published(will.topic, will.payload, will.qos, will.retain))

    def flush(self) -> int:
        """Deliver what is queued, and what that queues, in order; how many deliveries."""
        count = 0
        while self.queue:
            target, topic, payload = self.queue.pop(0)
            for link in [target] if target is not None else list(self.links):
                if link in self.links:
                    count += link.deliver(topic, payload)
        return count


class FakeConnection:
    """The WebSocket side of one charge point: records frames written and closes."""

    def __init__(self, name: str = "conn") -> None:
        self.name = name
        self.sent: list[str] = []
        self.closes: list[tuple[int, str]] = []

    def send_text(self, text: str) -> None:
        self.sent.append(text)

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def __repr__(self) -> str:
        return f"<FakeConnection {self.name}>"


class FakeInfo:
    def __init__(self, rc: int, mid: int) -> None:
        self.rc = rc
        self.mid = mid


class FakeOutMessage:
    def __init__(self, qos: int, state: Any) -> None:
        self.qos = qos
        self.state = state


class FakePahoClient:
    """Records what the link asks of paho; the test plays paho's network thread through its callbacks."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[Any, ...]] = []
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.subscribes: list[list[tuple[str, int]]] = []
        self.unsubscribes: list[str] = []
        self.paho_connected = False
        self._mid = 0
        self.on_connect: Any = None
        self.on_connect_fail: Any = None
        self.on_disconnect: Any = None
        self.on_message: Any = None
        self.on_publish: Any = None
        self.on_subscribe: Any = None

    def _next_mid(self) -> int:
        self._mid += 1
        return self._mid

    # what the link calls

    def username_pw_set(self, username: str | None, password: str | None = None) -> None:
        self.calls.append(("username_pw_set", username, password))

    def will_set(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.calls.append(("will_set", topic, payload, qos, retain))

    def tls_set_context(self, context: Any) -> None:
        self.calls.append(("tls_set_context", context))

    def tls_insecure_set(self, value: bool) -> None:
        self.calls.append(("tls_insecure_set", value))

    def reconnect_delay_set(self, low: float, high: float) -> None:
        self.calls.append(("reconnect_delay_set", low, high))

    def max_inflight_messages_set(self, value: int) -> None:
        self.calls.append(("max_inflight_messages_set", value))

    def max_queued_messages_set(self, value: int) -> None:
        self.calls.append(("max_queued_messages_set", value))

    def connect_async(self, host: str, port: int, keepalive: int) -> None:
        self.calls.append(("connect_async", host, port, keepalive))

    def loop_start(self) -> None:
        self.calls.append(("loop_start",))

    def loop_stop(self) -> None:
        self.calls.append(("loop_stop",))

    def disconnect(self) -> None:
        self.calls.append(("disconnect",))

    def is_connected(self) -> bool:
        return self.paho_connected

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> FakeInfo:
        mid = self._next_mid()
        if not self.paho_connected:
            return FakeInfo(mqtt.MQTT_ERR_NO_CONN, mid)
        self.published.append((topic, payload, qos, retain))
        return FakeInfo(mqtt.MQTT_ERR_SUCCESS, mid)

    def subscribe(self, entries: list[tuple[str, int]]) -> tuple[int, int]:
        mid = self._next_mid()
        if not self.paho_connected:
            return mqtt.MQTT_ERR_NO_CONN, mid
        self.subscribes.append(list(entries))
        return mqtt.MQTT_ERR_SUCCESS, mid

    def unsubscribe(self, topic_filter: str) -> tuple[int, int]:
        self.unsubscribes.append(topic_filter)
        return mqtt.MQTT_ERR_SUCCESS, self._next_mid()

    # paho's network thread

    def broker_connects(self) -> None:
        self.paho_connected = True
        self.on_connect(
            self, None, mqtt.ConnectFlags(False), ReasonCode(PacketTypes.CONNACK, identifier=0), None
        )

    def broker_refuses(self) -> None:
        self.on_connect(
            self, None, mqtt.ConnectFlags(False), ReasonCode(PacketTypes.CONNACK, identifier=135), None
        )

    def broker_lost(self) -> None:
        self.paho_connected = False
        self.on_disconnect(
            self, None, mqtt.DisconnectFlags(False), ReasonCode(PacketTypes.DISCONNECT, identifier=128), None
        )

    def connect_fails(self) -> None:
        self.on_connect_fail(self, None)

    def deliver(self, topic: str | bytes, payload: bytes) -> None:
        message = mqtt.MQTTMessage(0, topic if isinstance(topic, bytes) else topic.encode())
        message.payload = payload
        self.on_message(self, None, message)

    def ack(self, mid: int) -> None:
        self.on_publish(self, None, mid, ReasonCode(PacketTypes.PUBACK, identifier=0), None)

    def suback(self, mid: int, codes: list[int]) -> None:
        self.on_subscribe(
            self, None, mid, [ReasonCode(PacketTypes.SUBACK, identifier=c) for c in codes], None
        )


class FakeSocket:
    def __init__(self, fd: int = 7) -> None:
        self.fd = fd
        self.closed = False
        self.tls_pending = 0
        self.chunks: list[bytes] = []  # what recv returns, in order; then EAGAIN
        self.sent: list[bytes] = []
        self.accept: list[int | BaseException] = []  # per send: bytes taken, or what to raise
        self.options: list[tuple[int, int, int]] = []

    def fileno(self) -> int:
        return -1 if self.closed else self.fd

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.options.append((level, option, value))

    def recv(self, size: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError(errno.EAGAIN, "would block")
        return self.chunks.pop(0)

    def send(self, data: bytes) -> int:
        outcome = self.accept.pop(0) if self.accept else len(data)
        if isinstance(outcome, BaseException):
            raise outcome
        self.sent.append(data[:outcome])
        return outcome

    def pending(self) -> int:
        return self.tls_pending

    def close(self) -> None:
        self.closed = True
