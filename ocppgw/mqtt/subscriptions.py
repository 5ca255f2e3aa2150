"""The link's topic filters: which handler a message goes to, and what to (re)subscribe.

Exact filters are looked up in a dict; only wildcard filters are matched one by
one, each split into levels once (``ocppgw.core.topics.levels_match``, the gateway's one
implementation of MQTT matching; the tests' fake link uses it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paho.mqtt import client as mqtt
from twisted.logger import Logger

from ocppgw.core.ports import Handler
from ocppgw.core.topics import filter_levels, filter_problem, is_wildcard, levels_match
from ocppgw.metrics import Metrics
from ocppgw.mqtt.outbox import check_qos

RETRY_MAX = 30.0  # seconds between attempts at most, for a filter the broker keeps refusing


@dataclass(frozen=True, slots=True)
class _Subscription:
    qos: int
    handler: Handler


class Subscriptions:
    """Filters and their handlers, the SUBSCRIBE packets awaiting SUBACK, and dispatch."""

    chunk = 100
    """Topic filters per SUBSCRIBE packet when re-subscribing after a reconnect."""

    def __init__(self, metrics: Metrics, log: Logger) -> None:
        self._metrics = metrics
        self._log = log
        self._exact: dict[str, _Subscription] = {}
        self._wildcards: dict[str, _Subscription] = {}
        self._wildcard_items: tuple[tuple[str, tuple[str, ...], _Subscription], ...] = ()
        self.awaiting: dict[int, list[str]] = {}  # SUBSCRIBE mid -> its filters, until SUBACK
        self.refusals: dict[str, int] = {}  # filter -> refusals in a row (the retry's backoff)

    def add(self, topic_filter: str, qos: int, handler: Handler) -> bool:
        """Route ``topic_filter`` to ``handler``; True when the broker must hear of it (new filter or
        another QoS). ValueError for a malformed filter or QoS."""
        problem = filter_problem(topic_filter)
        if problem is not None:
            raise ValueError(problem)
        check_qos(qos)
        table = self._wildcards if is_wildcard(topic_filter) else self._exact
        previous = table.get(topic_filter)
        table[topic_filter] = _Subscription(qos, handler)
        if table is self._wildcards:
            self._wildcards_changed()
        return previous is None or previous.qos != qos

    def remove(self, topic_filter: str) -> bool:
        """Forget ``topic_filter``; True when it was subscribed."""
        self.refusals.pop(topic_filter, None)
        table = self._wildcards if is_wildcard(topic_filter) else self._exact
        if table.pop(topic_filter, None) is None:
            return False
        if table is self._wildcards:
            self._wildcards_changed()
        return True

    def _wildcards_changed(self) -> None:
        self._wildcard_items = tuple((f, filter_levels(f), sub) for f, sub in self._wildcards.items())

    def resubscribe(self, client: Any) -> None:
        """Subscribe to every filter again, as after a (re)connect."""
        entries = [(f, s.qos) for f, s in self._exact.items()]
        entries.extend((f, s.qos) for f, s in self._wildcards.items())
        for start in range(0, len(entries), self.chunk):
            self.send(client, entries[start : start + self.chunk])

    def send(self, client: Any, entries: list[tuple[str, int]]) -> None:
        """One SUBSCRIBE packet; its SUBACK is awaited."""
        rc, mid = client.subscribe(entries)
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self.awaiting[mid] = [f for f, _ in entries]
        # otherwise the connection is gone: the next connect subscribes again

    def on_suback(self, mid: int, refused: tuple[tuple[int, str], ...]) -> list[tuple[str, float]]:
        """Log each filter the broker refused; ``refused`` holds (index in the packet, reason).

        Returns ``(filter, delay)`` for each refused filter still wanted: the link subscribes to it
        again after ``delay`` seconds (1, 2, 4 ... 30 s). A broker may refuse for a passing reason
        (NATS when a JetStream call times out under load), and a refused filter would otherwise
        stay deaf (a charge point's commands) until the next reconnect."""
        filters = self.awaiting.pop(mid, None)
        if filters is None:
            return []
        bad = {index for index, _ in refused}
        for index, topic_filter in enumerate(filters):
            if index not in bad:
                self.refusals.pop(topic_filter, None)
        retries = []
        for index, reason in refused:
            topic_filter = filters[index] if index < len(filters) else "?"
            self._metrics.inc("mqtt_subscribe_refused")
            wanted = self.qos(topic_filter) is not None
            count = self.refusals.get(topic_filter, 0) + 1
            if wanted:
                self.refusals[topic_filter] = count
            delay = min(RETRY_MAX, 2.0 ** (count - 1))
            self._log.error(
                "MQTT broker refused the subscription to {topic_filter}: {reason}{retry}",
                topic_filter=topic_filter,
                reason=reason,
                retry=f"; subscribing again in {delay:g} s" if wanted else "",
            )
            if wanted:
                retries.append((topic_filter, delay))
        return retries

    def qos(self, topic_filter: str) -> int | None:
        """The QoS ``topic_filter`` is subscribed with, None when it is not (any more)."""
        table = self._wildcards if is_wildcard(topic_filter) else self._exact
        subscription = table.get(topic_filter)
        return None if subscription is None else subscription.qos

    def dispatch(self, topic: str | None, payload: bytes) -> None:
        """Call every matching handler with ``(topic, payload)``; ``topic`` None: it was not UTF-8."""
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
        wildcards = self._wildcard_items
        if wildcards:
            parts = topic.split("/")
            for topic_filter, levels, subscription in wildcards:
                if levels_match(levels, topic, parts):
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
