"""In-memory stand-ins for the gateway's collaborators, for unit tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ocppgw.mqtt.link import ConnectionObserver, Handler, IMqttLink


@dataclass(frozen=True)
class Published:
    """One message handed to ``FakeMqttLink.publish``."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic matching: ``+`` is one whole level, ``#`` the rest (zero or more levels)."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


@implementer(IMqttLink)
class FakeMqttLink:
    """An ``IMqttLink`` that records what the gateway asks of it.

    ``deliver`` plays the broker delivering a message, ``set_connected`` a
    (re)connect or disconnect; with ``refuse_publishes`` set, ``publish``
    answers False as a full buffer would.
    """

    def __init__(self, connected: bool = False) -> None:
        self.connected = connected
        self.started = 0
        self.stop_timeouts: list[float] = []
        self.published: list[Published] = []
        self.refused: list[Published] = []
        self.refuse_publishes = False
        self.subscriptions: dict[str, tuple[int, Handler]] = {}
        self.subscribe_calls: list[tuple[str, int]] = []
        self.unsubscribe_calls: list[str] = []
        self.observers: list[ConnectionObserver] = []

    # -- IMqttLink -------------------------------------------------------

    def start(self) -> None:
        self.started += 1

    def stop(self, timeout: float) -> Deferred[None]:
        self.stop_timeouts.append(timeout)
        self.set_connected(False)
        return succeed(None)

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        if not isinstance(payload, bytes):
            raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS must be 0, 1 or 2, got {qos!r}")
        if not topic or "+" in topic or "#" in topic:
            raise ValueError(f"invalid MQTT topic {topic!r}")
        message = Published(topic, payload, qos, retain)
        if self.refuse_publishes:
            self.refused.append(message)
            return False
        self.published.append(message)
        return True

    def subscribe(self, topic_filter: str, qos: int, handler: Handler) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"QoS must be 0, 1 or 2, got {qos!r}")
        self.subscribe_calls.append((topic_filter, qos))
        self.subscriptions[topic_filter] = (qos, handler)

    def unsubscribe(self, topic_filter: str) -> None:
        self.unsubscribe_calls.append(topic_filter)
        self.subscriptions.pop(topic_filter, None)

    def add_connection_observer(self, observer: ConnectionObserver) -> None:
        self.observers.append(observer)

    # -- test helpers ----------------------------------------------------

    def deliver(self, topic: str, payload: bytes) -> int:
        """Hand a message to every matching subscription's handler; how many handlers ran."""
        handlers = [h for f, (_, h) in list(self.subscriptions.items()) if topic_matches(f, topic)]
        for handler in handlers:
            handler(topic, payload)
        return len(handlers)

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
