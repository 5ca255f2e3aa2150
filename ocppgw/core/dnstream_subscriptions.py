"""Each charge point's downstream subscription, kept a while after it disconnects.

A charge point that reconnects within ``[dnstream] subscription_linger`` (a reconnect storm, a
network blip: thousands at once) finds its subscription still there, so neither this gateway nor the
broker handles an UNSUBSCRIBE, a SUBSCRIBE and their acknowledgements for it: a fifth of the
gateway's instructions per reconnect (``bench/reconnect_storm.py --callgrind``). While a
subscription lingers, a message on it is dropped and counted as for any charge point that is not
connected (without the subscription, the broker would have dropped it). Bounded: at most
``MAX_LINGERING`` linger, the oldest go first; one whose charge point another cluster member
claims goes at once; expiry runs at most once a second, ``EXPIRY_BATCH`` at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ocppgw.core.ports import IBrokerLink
from ocppgw.core.timers import cancel

MAX_LINGERING = 50_000
EXPIRY_EVERY = 1.0  # seconds between two expiry passes at most
EXPIRY_BATCH = 1_000  # unsubscribed in one reactor turn at most; more due: the next turn goes on


class DownstreamSubscriptions:
    """cid -> the filter subscribed for it; ``deliver(cid, topic, payload)`` gets its messages."""

    def __init__(
        self, link: IBrokerLink, clock: IReactorTime, deliver: Callable[[str, str, bytes], None]
    ) -> None:
        self._link, self._clock, self._deliver = link, clock, deliver
        self._topics: dict[str, str] = {}
        self._lingering: dict[str, float] = {}  # cid -> when its subscription goes; oldest first
        self._timer: IDelayedCall | None = None

    def topic(self, cid: str) -> str | None:
        """The filter subscribed for ``cid`` (attached or lingering), or None."""
        return self._topics.get(cid)

    def lingering(self) -> int:
        """How many subscriptions wait for their charge point to come back."""
        return len(self._lingering)

    def subscribe(self, cid: str, topic: str, qos: int) -> None:
        """``cid`` is attached here: subscribe ``topic`` for it, unless that is already subscribed."""
        self._lingering.pop(cid, None)
        current = self._topics.get(cid)
        if current == topic:
            return
        if current is not None:
            self._link.unsubscribe(current)
        self._topics[cid] = topic
        self._link.subscribe(topic, qos, partial(self._deliver, cid))

    def release(self, cid: str, linger: float) -> None:
        """``cid`` is no longer attached: unsubscribe after ``linger`` seconds (at once if 0)."""
        if cid not in self._topics:
            return
        if linger <= 0:
            self.drop(cid)
            return
        self._lingering.pop(cid, None)
        self._lingering[cid] = self._clock.seconds() + linger
        while len(self._lingering) > MAX_LINGERING:
            self.drop(next(iter(self._lingering)))
        self._arm()

    def drop(self, cid: str) -> None:
        """Unsubscribe ``cid``'s filter now (whether attached or lingering)."""
        self._lingering.pop(cid, None)
        topic = self._topics.pop(cid, None)
        if topic is not None:
            self._link.unsubscribe(topic)

    def drop_lingering(self, cid: str) -> None:
        """Another member holds ``cid`` now: a subscription lingering for it here goes at once."""
        if cid in self._lingering:
            self.drop(cid)

    def drop_all_lingering(self) -> None:
        """Unsubscribe every lingering subscription (the gateway stops)."""
        cancel(self._timer)
        self._timer = None
        for cid in list(self._lingering):
            self.drop(cid)

    def _arm(self) -> None:
        if self._timer is None and self._lingering:
            due = next(iter(self._lingering.values())) - self._clock.seconds()
            self._timer = self._clock.callLater(max(due, EXPIRY_EVERY), self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        for _ in range(EXPIRY_BATCH):
            if not self._lingering:
                return
            cid, due = next(iter(self._lingering.items()))
            if due > now:
                self._arm()
                return
            self.drop(cid)
        if self._lingering:
            self._timer = self._clock.callLater(0, self._expire)
