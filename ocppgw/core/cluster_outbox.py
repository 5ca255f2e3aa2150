"""A member's takeover claims and releases, batched: one control message per reactor turn.

In a reconnect storm every charge point's connect is a claim and its disconnect a release, and
each message is read by every member, the sender included (MQTT 3.1.1 has no "no local"): two
messages per reconnect cost more than the reconnect's own MQTT traffic once a node runs workers
(bench/README.md, issue 12). So what one turn claims and releases goes out as one message,
``{"member": M, "claims": [{"clientid", "at", "presence", "peer"} | {"clientid", "at",
"released": true}, ...]}``, in order, split to stay well under ``MAX_CONTROL_BYTES``.

Nothing is dropped: when the broker link's buffer is full, or retained states (presence) wait for
room (``LatestStates``), entries wait here, the latest per charge point and kind (a newer claim of a
charge point replaces its unsent older one, as a newer presence does), so what waits is bounded by
the number of charge points; they go out, oldest first, as the link has room again, after the
waiting states.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ocppgw.core.cluster_requests import CONTROL_QOS
from ocppgw.core.cluster_wire import MAX_CONTROL_BYTES, encode
from ocppgw.core.ports import IBrokerLink
from ocppgw.core.states import LatestStates
from ocppgw.core.timers import cancel

BATCH_BYTES = MAX_CONTROL_BYTES // 2  # a message's entries; one entry is at most ~6 KB


class ClaimOutbox:
    """Claims and releases waiting for the end of the reactor turn (or for room on the link)."""

    def __init__(
        self, link: IBrokerLink, clock: IReactorTime, states: LatestStates, topic: str, member: str
    ) -> None:
        self._link, self._clock, self._states = link, clock, states
        self._topic = topic
        self._head = encode({"member": member})[:-1] + b',"claims":['
        self._waiting: dict[tuple[str, bool], bytes] = {}  # (cid, released) -> entry, oldest first
        self._timer: IDelayedCall | None = None
        states.then(self.flush)

    def __len__(self) -> int:
        return len(self._waiting)

    def claim(self, cid: str, at: float, presence: str, peer: str) -> None:
        self._put((cid, False), {"clientid": cid, "at": at, "presence": presence, "peer": peer})

    def release(self, cid: str, at: float) -> None:
        self._put((cid, True), {"clientid": cid, "at": at, "released": True})

    def _put(self, key: tuple[str, bool], entry: dict[str, Any]) -> None:
        waiting = self._waiting
        waiting.pop(key, None)
        waiting[key] = encode(entry)
        if self._timer is None:
            self._timer = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Publish what waits, in messages of up to ``BATCH_BYTES``, while the link has room and no
        retained state waits before it."""
        cancel(self._timer)
        self._timer = None
        waiting, link = self._waiting, self._link
        while waiting and not len(self._states) and link.room() > 0:
            keys: list[tuple[str, bool]] = []
            parts: list[bytes] = []
            size = len(self._head)
            for key, entry in waiting.items():
                if parts and size + len(entry) + 1 > BATCH_BYTES:
                    break
                keys.append(key)
                parts.append(entry)
                size += len(entry) + 1
            payload = self._head + b",".join(parts) + b"]}"
            if not link.publish(self._topic, payload, CONTROL_QOS, retain=False):
                return
            for key in keys:
                del waiting[key]
