"""Many gateway members acting as one gateway, through the MQTT broker only (issue 12).

A member is one gateway process with its own broker connection (``[gateway] member``: the node
name, or a worker's name). What members tell each other (topics under the gateway mountpoint ``M``,
documented in the README):

- **Membership**: each member's retained state on its node topic (``[presence] node_topic``):
  ``online``, ``offline`` with reason ``shutdown``, or its last will, ``offline`` with ``node down``.
  Every member subscribes to the node topic with ``${node}`` as ``+``. A retained state is not
  enough on every broker: NATS copies retained messages between its servers asynchronously and only
  logs a retained message it could not store, so a member subscribing while another announces may
  never get that state. So a member that sees another come online (one it did not know online)
  publishes its own state again (``announce``, at most once per reactor turn): of two members
  starting together at least one sees the other, whose answer then reaches it live.
- **Takeover claims** on ``M gateway/cluster/takeover``: ``{"clientid", "member", "at", "presence",
  "peer"}`` when a charge point attaches. A member holding that charge point under an older
  ``(at, member)`` closes it; every member compares the same pairs, so racing connects end with one
  live connection. A local attach after a seen claim takes a later ``at`` than that claim (skewed
  clocks). When the connection ends, its member publishes the release (``"released": true``, the
  claim's ``at``): every member keeps the newest claim of each held charge point (what a dead
  member held) and nothing of a released one. What a member claims and releases in one reactor
  turn goes out as one message (``ocppgw.core.cluster_outbox``); a single claim is still read.
  Only what arrived over the current broker connection counts: the claims are forgotten when the
  link drops, and a member's at its clean shutdown.
- **Requests** (``ocppgw.core.cluster_requests``).
- **Node-down sweep**: when a member's will arrives, the online member with the smallest name
  (the dead one excluded) marks that member's charge points ``disconnected`` with reason
  ``node down``: after ``grace`` seconds (claims of charge points that reconnected elsewhere are on
  their way) those whose newest claim it knows is the dead member's, from the claims alone; then,
  with a ``PresenceSweep`` of the retained presence, the ones it did not know (claimed before it
  started). Each once; those claimed since the death are skipped; it stops if the dead member comes
  back. States that arrive right after (re)connecting (retained, in a burst) are
  weighed only after ``settle`` seconds, so that every member elects from the same membership.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ocppgw.core.cluster_outbox import ClaimOutbox
from ocppgw.core.cluster_requests import CONTROL_QOS, Gathered, Handler, Requests
from ocppgw.core.cluster_wire import MAX_CONTROL_TOPIC, TAKEOVER, decode, ignored, name, number
from ocppgw.core.peertext import clip
from ocppgw.core.ports import IBrokerLink
from ocppgw.core.presence import PresenceSweep, SweepQueue
from ocppgw.core.states import LatestStates
from ocppgw.core.timers import cancel
from ocppgw.core.topics import cid_problem, filter_problem, node_topic

NODE_DOWN = "node down"
SHUTDOWN = "shutdown"
SETTLE = 0.5  # seconds after a connect before membership counts for an election
GRACE = 0.5  # seconds between a will and marking what the claims say the dead member held
MAX_CLAIMS = 1_000_000  # held charge points known cluster-wide; past it the oldest claims go
MAX_PEER = 200  # characters of a claim's peer address kept
MAX_MEMBERS = 10_000
LATER = 0.001  # how much later than a seen claim a local attach claims
CLAIM_NEEDS = "a claim needs a charge point id 'clientid', a member name and a number 'at'"

# (member that died, its node, skip(cid)) -> the sweep of its charge points
SweepFactory = Callable[[str, str, Callable[[str], bool]], PresenceSweep]


@dataclass(slots=True)
class _Claim:
    at: float
    member: str
    serial: int  # the order of arrival here, to compare with a will's
    presence: str = ""  # the charge point's presence topic, as the claim named it
    peer: str = ""


@dataclass
class _Member:
    node: str
    online: bool
    reason: str = ""


@dataclass
class _Death:
    node: str
    serial: int  # claims arrived before the will have a smaller serial
    held: dict[str, _Claim]  # what the dead member held by the claims, until the sweep takes it
    sweep: PresenceSweep | None = None
    grace: IDelayedCall | None = None


class Cluster:
    """Membership, takeover claims, requests and the node-down sweep of one member."""

    _log = Logger()

    def __init__(
        self,
        link: IBrokerLink,
        clock: IReactorTime,
        member: str,
        node: str,
        prefix: str,
        node_template: str | None,
        sweeps: SweepQueue,
        states: LatestStates,
        sweep_factory: SweepFactory | None = None,
        settle: float = SETTLE,
        grace: float = GRACE,
        request_timeout: float | None = None,
        subscribe_qos: int = CONTROL_QOS,
    ) -> None:
        """``prefix``: the control topics' mountpoint; ``node_template``: ``[presence] node_topic``,
        None when presence (and with it membership and the node-down sweep) is off; ``states``: the
        retained states that claims waiting for room on the link go out after (``ClaimOutbox``);
        ``subscribe_qos``: the control subscriptions' (``topics.control_subscription_qos``)."""
        self._link, self._clock = link, clock
        self.member, self.node = member, node
        self._prefix = prefix
        self._template = node_template
        self._sweeps = sweeps
        self._sweep_factory = sweep_factory
        self._settle = settle
        self._grace = grace
        self._stopped = False
        self._names: dict[str, str] = {}  # one string per member name, shared by its claims
        self._settled = False
        self._settle_timer: IDelayedCall | None = None
        self._members: dict[str, _Member] = {}
        self._deaths: dict[str, _Death] = {}
        self._claims: dict[str, _Claim] = {}  # cid -> the newest claim of a held cid, oldest first
        self._held: dict[str, float] = {}  # cid -> our claim's ``at``, while we hold it
        self._serial = 0  # counts claims and wills as they arrive
        self.replaced: Callable[[str, str], None] = lambda cid, by: None  # a newer claim took cid
        self.outdated: Callable[[str], None] = lambda cid: None  # an older claim for a cid we hold
        self.elsewhere: Callable[[str], None] = lambda cid: None  # another member holds a cid we do not
        self.announce: Callable[[], None] = lambda: None  # publish this member's online state again
        self._announcing: IDelayedCall | None = None
        self._membership_filter = self._filter()
        self.requests = Requests(
            link, clock, member, node, prefix, self.expected, subscribe_qos=subscribe_qos
        )
        if request_timeout is not None:
            self.requests.timeout = request_timeout
        self.takeover_topic = prefix + TAKEOVER
        self._outbox = ClaimOutbox(link, clock, states, self.takeover_topic, member)
        link.subscribe(self.takeover_topic, subscribe_qos, self._claim_received)
        if self._membership_filter is not None:
            link.subscribe(self._membership_filter, subscribe_qos, self._state_received)
        link.add_connection_observer(self._link_state_changed)

    def _filter(self) -> str | None:
        if self._template is None:
            return None
        topic_filter = node_topic(self._prefix, self._template, "+")
        if "${node}" not in self._template or filter_problem(topic_filter) is not None:
            self._log.warn(
                "no cluster membership: [presence] node_topic {template!r} has no ${{node}} level",
                template=self._template,
            )
            return None
        return topic_filter

    # -- membership --------------------------------------------------------

    def online(self) -> dict[str, str]:
        """Every member known online, this one included: member -> node."""
        members = {m: s.node for m, s in self._members.items() if s.online}
        members[self.member] = self.node
        return dict(sorted(members.items()))

    def alone(self) -> bool:
        """Known to be the only member: membership is tracked, has settled since the link connected,
        and no other member is online. Claims and releases would reach nobody then, so a single
        gateway sends none (two messages fewer per reconnect); a member that comes online later
        learns this one's charge points from the retained presence if it ever needs them."""
        return (
            self._membership_filter is not None
            and self._settled
            and not any(s.online for s in self._members.values())
        )

    def expected(self) -> set[str] | None:
        """The other members a request waits for; None when membership is not known."""
        if self._membership_filter is None:
            return None
        return {m for m, s in self._members.items() if s.online}

    def _state_received(self, topic: str, payload: bytes) -> None:
        body = decode(topic, payload)
        if body is None:
            return
        member = name(body.get("member", body.get("node")))
        node = name(body.get("node"))
        status = body.get("status")
        if member is None or node is None or status not in ("online", "offline"):
            ignored(topic, "a node state needs 'node' (and 'member') names and 'status' online or offline")
            return
        assert self._template is not None
        if topic != node_topic(self._prefix, self._template, member):
            ignored(topic, f"the state of member {clip(member, 64)} on another member's topic")
            return
        if member == self.member:
            return
        reason = body.get("reason")
        reason = reason if isinstance(reason, str) else ""
        known = self._members.get(member)
        if known is None and len(self._members) >= MAX_MEMBERS:
            ignored(topic, f"more than {MAX_MEMBERS} members")
            return
        self._members[member] = _Member(node, status == "online", reason)
        if status == "online":
            if known is None or not known.online:
                self._log.info("gateway member {member} (node {node}) is online", member=member, node=node)
                self._announce_soon()
            self._revived(member)
        else:
            if known is None or known.online:
                self._log.info(
                    "gateway member {member} (node {node}) is offline: {reason}",
                    member=member,
                    node=node,
                    reason=clip(reason or "no reason given", 80),
                )
            self.requests.member_gone(member)
            held = self._forget(member)
            if reason == NODE_DOWN and member not in self._deaths:
                self._serial += 1
                self._deaths[member] = _Death(node, self._serial, held)
        self._elect()

    def _announce_soon(self) -> None:
        """Tell a member that just came online that this one is online too (see the module doc)."""
        if self._announcing is None and not self._stopped:
            self._announcing = self._clock.callLater(0, self._announce)

    def _announce(self) -> None:
        self._announcing = None
        if not self._stopped:
            self.announce()

    def _forget(self, member: str) -> dict[str, _Claim]:
        """Drop the claims of ``member`` (offline); returns them."""
        held = {cid: claim for cid, claim in self._claims.items() if claim.member == member}
        for cid in held:
            del self._claims[cid]
        return held

    def _revived(self, member: str) -> None:
        death = self._deaths.pop(member, None)
        if death is not None:
            cancel(death.grace)
            if death.sweep is not None:
                self._sweeps.cancel(death.sweep)

    def _link_state_changed(self, connected: bool) -> None:
        cancel(self._settle_timer)
        self._settled = False
        if not connected:  # claims and releases may be missed until the link is back: trust none
            self._claims.clear()
            for death in self._deaths.values():
                death.held = {}
        if connected:
            self._settle_timer = self._clock.callLater(self._settle, self._now_settled)

    def _now_settled(self) -> None:
        self._settled = True
        self._elect()

    def _elect(self) -> None:
        """Start the sweep of each dead member this member is elected for."""
        if not self._settled or self._sweep_factory is None:
            return
        for member, death in self._deaths.items():
            if death.sweep is not None:
                continue
            survivors = [m for m, s in self._members.items() if s.online and m != member]
            if min([*survivors, self.member]) != self.member:
                death.held = {}  # another member sweeps; should it die too, the retained sweep will do
                continue
            self._log.info(
                "gateway member {member} went down: marking its charge points disconnected",
                member=member,
                known=len(death.held),
            )
            death.sweep = self._sweep_factory(
                member, death.node, lambda cid, since=death.serial: self._claimed_since(cid, since)
            )
            if death.held:
                death.grace = self._clock.callLater(self._grace, self._mark_held, death)
            else:
                self._sweeps.run(death.sweep)

    def _mark_held(self, death: _Death) -> None:
        """What the claims say the dead member held: marked now; the retained sweep does the rest."""
        death.grace = None
        held, death.held = death.held, {}
        assert death.sweep is not None
        for cid, claim in held.items():
            death.sweep.mark(cid, claim.presence, claim.peer)
        self._sweeps.run(death.sweep)

    # -- takeover claims ---------------------------------------------------

    def claim(self, cid: str, presence: str = "", peer: str = "") -> float:
        """``cid`` attached here (its presence topic ``presence``, from ``peer``): tell every member;
        returns this claim's ``at``."""
        at = self._clock.seconds()
        seen = self._claims.get(cid)
        if seen is not None and seen.member != self.member and seen.at >= at:
            at = seen.at + LATER
        self._held[cid] = at
        self._remember(cid, _Claim(at, self.member, 0))
        if not self.alone():
            self._outbox.claim(cid, at, presence, peer)
        return at

    def release(self, cid: str) -> None:
        """``cid``'s connection here ended: every member forgets its claim (not at shutdown, whose
        ``offline`` state says it for all)."""
        at = self._held.pop(cid, None)
        if at is None:
            return
        self._released(cid, at, self.member)
        if not self._stopped and not self.alone():
            self._outbox.release(cid, at)

    def _released(self, cid: str, at: float, member: str) -> None:
        seen = self._claims.get(cid)
        if seen is not None and (seen.at, seen.member) == (at, member):
            del self._claims[cid]

    def _claimed_since(self, cid: str, serial: int) -> bool:
        claim = self._claims.get(cid)
        return cid in self._held or (claim is not None and claim.serial > serial)

    def _remember(self, cid: str, claim: _Claim) -> None:
        seen = self._claims.pop(cid, None)
        if seen is not None and (seen.at, seen.member) > (claim.at, claim.member):
            claim = seen
        self._serial += 1
        claim.serial = self._serial
        self._claims[cid] = claim
        for death in self._deaths.values():  # claimed since: the dead member no longer holds it
            death.held.pop(cid, None)
        while len(self._claims) > MAX_CLAIMS:
            del self._claims[next(iter(self._claims))]

    def _claim_received(self, topic: str, payload: bytes) -> None:
        body = decode(topic, payload)
        if body is None:
            return
        entries = body.get("claims")
        if entries is None:  # one claim or release per message, as members before batching sent
            if not self._take(body, body.get("member")):
                ignored(topic, CLAIM_NEEDS)
            return
        member = self._member_name(body.get("member"))
        if member is None or not isinstance(entries, list):
            ignored(topic, "a batch of claims needs a member name and a list 'claims'")
            return
        if member == self.member:
            return
        bad = sum(1 for entry in entries if not (isinstance(entry, dict) and self._take(entry, member)))
        if bad:  # one line per message, however many entries: a hostile batch cannot flood the log
            ignored(topic, f"{bad} of {len(entries)} entries of a batch: {CLAIM_NEEDS}")

    def _take(self, body: dict[str, Any], member: Any) -> bool:
        """One claim or release of ``member``; False when it is malformed."""
        cid, member, at = body.get("clientid"), self._member_name(member), number(body.get("at"))
        if not isinstance(cid, str) or cid_problem(cid) is not None or member is None or at is None:
            return False
        if member == self.member:
            return True
        if body.get("released") is True:
            self._released(cid, at, member)
            return True
        presence, peer = body.get("presence"), body.get("peer")
        self._remember(
            cid,
            _Claim(
                at,
                member,
                0,
                presence if isinstance(presence, str) and len(presence) <= MAX_CONTROL_TOPIC else "",
                peer[:MAX_PEER] if isinstance(peer, str) else "",
            ),
        )
        mine = self._held.get(cid)
        if mine is None:
            self.elsewhere(cid)
        elif (at, member) > (mine, self.member):
            del self._held[cid]
            self.replaced(cid, member)
        else:
            self.outdated(cid)
        return True

    def _member_name(self, value: Any) -> str | None:
        """``value`` as a member name (one string per member, shared by its claims), or None. A name
        seen before is not checked again: every claim and release carries one."""
        known = self._names.get(value) if isinstance(value, str) else None
        if known is not None:
            return known
        member = name(value)
        if member is not None and len(self._names) < MAX_MEMBERS:
            self._names[member] = member
        return member

    # -- requests ----------------------------------------------------------

    def serve(self, op: str, handler: Handler) -> None:
        self.requests.serve(op, handler)

    def ask(self, op: str, args: dict[str, Any] | None = None) -> Deferred[Gathered]:
        return self.requests.ask(op, args)

    def stop(self) -> None:
        """Shutting down: waiting requests get what they have, no sweep starts, releases are not
        published (the ``offline`` state that follows releases every claim of this member)."""
        cancel(self._settle_timer)
        cancel(self._announcing)
        self._outbox.flush()  # a claim may still have to close an older connection elsewhere
        self._settled = False
        self._stopped = True
        self.requests.stop()
        for death in self._deaths.values():
            cancel(death.grace)
            if death.sweep is not None:
                self._sweeps.cancel(death.sweep)
