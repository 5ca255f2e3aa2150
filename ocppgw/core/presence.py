"""Retained presence messages: their body, and the start-up sweep of what a crash left behind.

After ``kill -9`` the broker publishes the node's last will, but every charge point's retained
presence still says ``connected``. ``PresenceSweep`` runs once, when the broker link first connects:
it subscribes to the presence filters of this node's mountpoints, and for each retained message of
this member (``member`` is this member's name; ``node`` this node's in a body without ``member``)
that says ``connected`` for a charge point that has not attached since start-up, it publishes
``disconnected`` with reason ``node restarted`` to that same topic (retained). Then it unsubscribes.
The cluster (``ocppgw.core.cluster``) runs the same sweep, reason ``node down``, for a member that
died; ``SweepQueue`` runs one sweep at a time.

What is swept: one filter per mountpoint in use (``[gateway] mountpoint`` and each listener's own),
the presence template under it with ``${cid}`` as ``+``. A mountpoint or template where ``${cid}`` is
only part of a level (``site-${cid}/``) makes no valid filter: its presence is not swept (logged).
A message is swept only when its topic is exactly the presence topic of its ``clientid`` under one
of these mountpoints, so nothing else under a wildcard is ever written to.

MQTT has no "end of retained messages" marker, and ``IBrokerLink`` does not expose the SUBACK: the
sweep ends once ``quiet`` seconds pass with no presence message (the broker sends retained messages
right after the SUBACK, back to back), and at the latest ``limit`` seconds after subscribing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ocppgw.core.ports import IBrokerLink
from ocppgw.core.timers import cancel
from ocppgw.core.topics import filter_problem, has_cid, render

NODE_RESTARTED = "node restarted"
SWEEP_QUIET = 2.0
SWEEP_LIMIT = 30.0

_log = Logger()


def presence_body(
    cid: str, status: str, node: str, peer: str, at: float, reason: str = "", member: str = ""
) -> bytes:
    """The JSON of one charge point's presence message; ``at`` in seconds since the epoch; ``member``
    (the gateway process that holds it) defaults to ``node``."""
    body: dict[str, object] = {
        "clientid": cid,
        "status": status,
        "node": node,
        "member": member or node,
        "peer": peer,
        "at": timestamp(at),
    }
    if reason:
        body["reason"] = reason
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def timestamp(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def presence_filter(mountpoint: str, template: str) -> str | None:
    """The filter matching every charge point's presence topic under ``mountpoint``, or None when
    ``${cid}`` is not a whole level there."""
    template = mountpoint + template
    topic_filter = render(template, cid="+")
    if not has_cid(template) or filter_problem(topic_filter) is not None:
        return None
    return topic_filter


def held_by(body: dict[str, object], member: str, node: str) -> bool:
    """Whether a presence body names ``member``: by its ``member``, or by ``node`` in a body written
    before members were named."""
    return body.get("member") == member if "member" in body else body.get("node") == node


class PresenceSweep:
    """Marks ``disconnected`` the charge points a previous run of this member (or, with ``reason``
    NODE_DOWN, a member that died) left ``connected``."""

    def __init__(
        self,
        link: IBrokerLink,
        clock: IReactorTime,
        node: str,
        mountpoints: Iterable[str],
        template: str,
        qos: int,
        attached: Callable[[str], bool],
        publish: Callable[[str, bytes, int], None],
        quiet: float = SWEEP_QUIET,
        limit: float = SWEEP_LIMIT,
        member: str = "",
        reason: str = NODE_RESTARTED,
    ) -> None:
        self._link = link
        self._clock = clock
        self._node = node
        self._member = member or node
        self._reason = reason
        self.finished: Callable[[], None] | None = None  # called once the sweep ends (SweepQueue)
        self._mountpoints = tuple(dict.fromkeys(mountpoints))
        self._template = template
        self._qos = qos
        self._attached = attached
        self._publish = publish  # retained, never dropped (``LatestStates.publish``)
        self._quiet = quiet
        self._limit = limit
        self._filters: list[str] = []
        self._claimed: set[str] = set()  # charge points attached since start-up: never swept
        self._done: set[str] = set()  # topics already answered
        self._quiet_timer: IDelayedCall | None = None
        self._limit_timer: IDelayedCall | None = None
        self.started = False
        self.swept = 0

    @property
    def running(self) -> bool:
        return bool(self._filters)

    def claim(self, cid: str) -> None:
        """``cid`` attached to this node: its presence is this run's, whatever the sweep sees."""
        if not self.started or self.running:  # once over, nothing more to skip: keep nothing
            self._claimed.add(cid)

    def start(self) -> None:
        """Subscribe to the presence filters (once per process) and arm the end of the sweep."""
        if self.started:
            return
        self.started = True
        for mountpoint in self._mountpoints:
            topic_filter = presence_filter(mountpoint, self._template)
            if topic_filter is None:
                _log.info(
                    "presence under mountpoint {mountpoint!r} is not swept at start-up: ${{cid}} is not "
                    "a whole topic level there",
                    mountpoint=mountpoint,
                )
            elif topic_filter not in self._filters:
                self._filters.append(topic_filter)
        for topic_filter in self._filters:
            self._link.subscribe(topic_filter, self._qos, self._received)
        if self._filters:
            self._quiet_timer = self._clock.callLater(self._quiet, self.finish)
            self._limit_timer = self._clock.callLater(self._limit, self.finish)
        else:
            self.finish()

    def _received(self, topic: str, payload: bytes) -> None:
        if not self._filters:
            return
        cancel(self._quiet_timer)
        self._quiet_timer = self._clock.callLater(self._quiet, self.finish)
        try:
            body = json.loads(payload)
        except ValueError:
            return
        if not isinstance(body, dict) or body.get("status") != "connected":
            return
        if not held_by(body, self._member, self._node):
            return
        cid, peer = body.get("clientid"), body.get("peer")
        if isinstance(cid, str):
            self.mark(cid, topic, peer if isinstance(peer, str) else "")

    def mark(self, cid: str, topic: str, peer: str) -> bool:
        """Publish ``disconnected`` on ``topic`` for ``cid`` (last seen from ``peer``) unless it is
        skipped or already done, or ``topic`` is not ``cid``'s presence topic under a swept
        mountpoint; whether it was published. The cluster calls it for what a dead member's claims
        said it held, before the sweep reads the retained rest."""
        if cid in self._claimed or self._attached(cid) or topic in self._done:
            return False
        if not any(render(m, cid) + render(self._template, cid) == topic for m in self._mountpoints):
            return False
        self._done.add(topic)
        data = presence_body(
            cid, "disconnected", self._node, peer, self._clock.seconds(), self._reason, self._member
        )
        self._publish(topic, data, self._qos)
        self.swept += 1
        _log.info("charge point {cid} marked disconnected: {reason}", cid=cid, reason=self._reason)
        return True

    def finish(self) -> None:
        """Stop listening: unsubscribe and cancel the timers."""
        cancel(self._quiet_timer)
        cancel(self._limit_timer)
        self._quiet_timer = self._limit_timer = None
        filters, self._filters = self._filters, []
        self.started = True  # a sweep cancelled before it started never starts
        self._claimed.clear()
        self._done.clear()
        for topic_filter in filters:
            self._link.unsubscribe(topic_filter)
        if filters:
            _log.info(
                "presence sweep done: {count} charge point(s) of member {member} marked disconnected",
                count=self.swept,
                member=self._member,
                node=self._node,
            )
        finished, self.finished = self.finished, None
        if finished is not None:
            finished()


class SweepQueue:
    """Runs sweeps one at a time: they subscribe to the same presence filters, and the link keeps one
    handler per filter (and re-sends no SUBSCRIBE, so no retained messages, for a filter it holds)."""

    def __init__(self) -> None:
        self._waiting: list[PresenceSweep] = []
        self._running: PresenceSweep | None = None

    def run(self, sweep: PresenceSweep) -> None:
        """Start ``sweep`` now, or when the one running ends."""
        if sweep.started or sweep is self._running or sweep in self._waiting:
            return
        self._waiting.append(sweep)
        self._next()

    def cancel(self, sweep: PresenceSweep) -> None:
        """Stop ``sweep`` whether it runs or waits."""
        if sweep in self._waiting:
            self._waiting.remove(sweep)
        elif sweep is self._running:
            sweep.finish()

    def _next(self) -> None:
        while self._running is None and self._waiting:
            sweep = self._running = self._waiting.pop(0)
            sweep.finished = self._ended
            sweep.start()

    def _ended(self) -> None:
        self._running = None
        self._next()
