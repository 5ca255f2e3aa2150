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

from collections.abc import Callable

from twisted.logger import Logger

from ocppgw.core.ports import IBrokerLink
from ocppgw.metrics import Metrics


class LatestStates:
    """The latest retained state per topic, published as the broker link has room."""

    _log = Logger()

    def __init__(self, link: IBrokerLink, metrics: Metrics) -> None:
        self._link = link
        self._metrics = metrics
        # key (the topic, unless given) -> (topic, payload, qos, retain), oldest first
        self._waiting: dict[str, tuple[str, bytes, int, bool]] = {}
        self._followers: list[Callable[[], None]] = []
        link.add_room_observer(self.flush)
        metrics.gauge("presence_waiting", lambda: float(len(self._waiting)))

    def __len__(self) -> int:
        """States not yet handed to the link."""
        return len(self._waiting)

    def publish(
        self, topic: str, payload: bytes, qos: int, key: str | None = None, retain: bool = True
    ) -> None:
        """Publish ``payload`` retained on ``topic`` now if the link has room, else as soon as it has.

        ``key`` (default: the topic) names the state when several share a topic, such as the
        cluster's takeover claims (one per charge point on one topic, not retained)."""
        waiting = self._waiting
        if not waiting and self._link.room() > 0 and self._link.publish(topic, payload, qos, retain=retain):
            return
        if not waiting:
            self._log.info("broker link buffer full: holding presence until it has room")
        key = topic if key is None else key
        waiting.pop(key, None)  # the newer state replaces the unsent one, and waits its turn
        waiting[key] = (topic, payload, qos, retain)
        self._metrics.inc("presence_deferred")

    def then(self, follower: Callable[[], None]) -> None:
        """Call ``follower()`` when the link has room again and no state waits any more: what must
        not overtake the states (the cluster's batched claims) goes out then, in this order."""
        self._followers.append(follower)

    def flush(self) -> None:
        """Hand waiting states to the link, oldest first, while it has room; then the followers'."""
        waiting = self._waiting
        if waiting:
            link = self._link
            while waiting and link.room() > 0:  # asked each time: a last 0 has the link tell us again
                key = next(iter(waiting))
                topic, payload, qos, retain = waiting[key]
                if not link.publish(topic, payload, qos, retain=retain):
                    return
                del waiting[key]
            if waiting:
                return
            self._log.info("presence held back by a full broker link buffer: all published")
        for follower in self._followers:
            follower()
