"""Retained state messages (each charge point's presence, the node's online/offline) that are never dropped.

A presence message is state, not a stream: only the latest one per topic matters. A storm (thousands
of charge points disconnecting in one reactor turn, a shutdown) fills the broker link's bounded buffer
(``[mqtt] max_buffered_messages``) at once, so ``LatestStates`` keeps what the link has no room for,
one entry per topic (bounded by the number of charge points), and hands it over as the link reports
room again (``IBrokerLink.add_room_observer``). A newer state for a topic replaces the unsent older
one, and nothing for a topic is published before an earlier state of that topic is in the link's
(ordered) buffer, so a charge point's presence never goes backwards.
"""

from __future__ import annotations

from twisted.logger import Logger

from ocppgw.core.ports import IBrokerLink
from ocppgw.metrics import Metrics


class LatestStates:
    """The latest retained state per topic, published as the broker link has room."""

    _log = Logger()

    def __init__(self, link: IBrokerLink, metrics: Metrics) -> None:
        self._link = link
        self._metrics = metrics
        self._waiting: dict[str, tuple[bytes, int]] = {}  # topic -> (payload, qos), oldest first
        link.add_room_observer(self.flush)
        metrics.gauge("presence_waiting", lambda: float(len(self._waiting)))

    def __len__(self) -> int:
        """States not yet handed to the link."""
        return len(self._waiting)

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish ``payload`` retained on ``topic`` now if the link has room, else as soon as it has."""
        waiting = self._waiting
        if not waiting and self._link.room() > 0 and self._link.publish(topic, payload, qos, retain=True):
            return
        if not waiting:
            self._log.info("broker link buffer full: holding presence until it has room")
        waiting.pop(topic, None)  # the newer state replaces the unsent one, and waits its turn
        waiting[topic] = (payload, qos)
        self._metrics.inc("presence_deferred")

    def flush(self) -> None:
        """Hand waiting states to the link, oldest first, while it has room."""
        waiting = self._waiting
        if not waiting:
            return
        link = self._link
        while waiting and link.room() > 0:  # asked each time: a last 0 has the link tell us again
            topic = next(iter(waiting))
            payload, qos = waiting[topic]
            if not link.publish(topic, payload, qos, retain=True):
                return
            del waiting[topic]
        if not waiting:
            self._log.info("presence held back by a full broker link buffer: all published")
