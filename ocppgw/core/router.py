"""Routing between charge point sessions and MQTT topics; no sockets here.

The gateway keeps one live session per charge point id (the newest connection
wins), one downstream subscription per id, and the retained presence messages
a central system reads to know who is online. When the broker link first connects, a
``PresenceSweep`` marks disconnected what a crashed earlier run of this member left connected.
Across members (other nodes, other workers) the ``Cluster`` carries the rule "newest connection
wins": a newer claim elsewhere closes the connection here, without a ``disconnected`` presence (the
charge point is connected, elsewhere).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ocppgw.config import GatewayConfig, ListenerSection
from ocppgw.core.cluster import NODE_DOWN, SHUTDOWN, Cluster
from ocppgw.core.cluster_wire import control_prefix
from ocppgw.core.dnstream_subscriptions import DownstreamSubscriptions
from ocppgw.core.peertext import clip
from ocppgw.core.ports import IBrokerLink, IChargePoint, PeerIdentity, Will
from ocppgw.core.presence import PresenceSweep, SweepQueue, presence_body
from ocppgw.core.schemas import SchemaRegistry
from ocppgw.core.session import ChargePointSession, SessionSettings
from ocppgw.core.states import LatestStates
from ocppgw.core.topics import (
    TopicPlan,
    control_subscription_qos,
    node_topic,
    retained_on_wildcards,
    unsafe_chars,
)
from ocppgw.core.upstream import Upstream
from ocppgw.metrics import Metrics


class Attached:
    """What the router keeps of one live charge point (read by the management API's client list)."""

    __slots__ = ("connection", "listener", "peer", "session", "since", "upstream", "username")

    def __init__(
        self,
        connection: IChargePoint,
        upstream: Upstream,
        session: ChargePointSession,
        peer: str,
        since: float,
        listener: ListenerSection,
        username: str | None,
    ) -> None:
        self.listener, self.username = listener, username
        self.connection = connection
        self.upstream = upstream
        self.session = session
        self.peer = peer
        self.since = since  # when the handshake completed: what "connected" presence reports


class Router:
    """The registry of connected charge points and the routes between them and MQTT."""

    _log = Logger()

    def __init__(
        self,
        config: GatewayConfig,
        link: IBrokerLink,
        clock: IReactorTime,
        metrics: Metrics,
        schemas: SchemaRegistry | None = None,
    ) -> None:
        self._link, self._clock = link, clock
        self._metrics = metrics
        self._schemas = schemas
        self._attached: dict[str, Attached] = {}
        self.subscriptions = DownstreamSubscriptions(link, clock, self._deliver)
        self._node = config.gateway.node_name
        self._member = config.gateway.member
        self._started_with = config  # the node's will and state keep the start-up mountpoint
        self.states = LatestStates(link, metrics)  # presence and node state: never dropped
        broker = config.mqtt.broker
        self.unsafe_cid_chars = unsafe_chars(broker)
        """Characters refused in a charge point id: the broker cannot carry them in a topic."""
        if config.presence.enable and not retained_on_wildcards(broker):
            self._log.info(
                "[mqtt] broker = {broker}: retained messages do not reach wildcard subscriptions there, "
                "so the start-up presence sweep is off",
                broker=broker,
            )
        self.reconfigure(config)
        metrics.gauge("connected_charge_points", lambda: len(self._attached))
        metrics.gauge("lingering_subscriptions", self.subscriptions.lingering)
        self._mountpoints = [self._mountpoint] + [
            listener.mountpoint for listener in config.listeners if listener.mountpoint is not None
        ]
        self.sweeps = SweepQueue()
        self.sweep = self._sweep(self._member, self._node, lambda cid: cid in self._attached)
        if not (config.presence.enable and retained_on_wildcards(broker)):
            self.sweep.finish()  # it never runs: keep no list of the charge points it would skip
        link.add_connection_observer(self._link_state_changed)
        presence = config.presence
        self.cluster = Cluster(
            link,
            clock,
            self._member,
            self._node,
            control_prefix(config.gateway.mountpoint),
            presence.node_topic if presence.enable else None,
            self.sweeps,
            self.states,
            self._node_down_sweep if presence.enable else None,
            subscribe_qos=control_subscription_qos(broker),
        )
        self.cluster.replaced = self._replaced
        self.cluster.outdated = self._outdated
        self.cluster.elsewhere = self.subscriptions.drop_lingering
        self.cluster.announce = lambda: self.publish_node_state("online")

    def _sweep(
        self, member: str, node: str, skip: Callable[[str], bool], reason: str = "node restarted"
    ) -> PresenceSweep:
        """A sweep of the presence ``member`` left ``connected``, under every mountpoint in use."""
        presence = self._started_with.presence
        return PresenceSweep(
            self._link, self._clock, node, self._mountpoints, presence.topic, presence.qos, skip,
            self.states.publish, member=member, reason=reason,
        )  # fmt: skip

    def _node_down_sweep(self, member: str, node: str, claimed: Callable[[str], bool]) -> PresenceSweep:
        return self._sweep(member, node, lambda cid: cid in self._attached or claimed(cid), NODE_DOWN)

    def attached(self) -> list[Attached]:
        """Every live charge point, in the order they connected."""
        return list(self._attached.values())

    def find(self, cid: str) -> Attached | None:
        """The live charge point ``cid``, or None."""
        return self._attached.get(cid)

    def reconfigure(self, config: GatewayConfig) -> None:
        """Take ``config``'s session settings, mountpoint and topics for the charge points that connect
        from now on (the management API changed them); connected ones keep theirs. The node name and
        the presence settings stay those the router started with."""
        checking = config.gateway.message_format_checking
        self._config = config
        self._settings = SessionSettings(
            heartbeat_interval=config.gateway.default_heartbeat_interval,
            heartbeat_backoff=config.gateway.heartbeat_checking_times_backoff,
            max_queue=config.dnstream.max_mqueue_len,
            reply_timeout=config.dnstream.reply_timeout,
            check_upstream=self._schemas is not None and checking in ("all", "upstream_only"),
            check_dnstream=self._schemas is not None and checking in ("all", "dnstream_only"),
            max_outgoing_frame_size=config.gateway.max_outgoing_frame_size,
            max_unique_id_length=config.gateway.max_unique_id_length,
        )
        self._mountpoint = config.gateway.mountpoint
        up = config.upstream
        self._templates = TopicPlan(
            up.topic,
            up.reply_topic,
            up.error_topic,
            config.dnstream.topic,
            config.presence.topic,
            dict(up.topic_override_mapping),
        )

    def session(self, cid: str) -> ChargePointSession | None:
        attached = self._attached.get(cid)
        return attached.session if attached is not None else None

    # -- attach and detach -----------------------------------------------

    def attach(
        self,
        cid: str,
        connection: IChargePoint,
        listener: ListenerSection,
        peer: str,
        certificate: PeerIdentity | None = None,
        username: str | None = None,
    ) -> ChargePointSession:
        """Register a charge point whose handshake succeeded; an older connection of the same id is closed.

        ``certificate``: the client certificate's identity on wss, named in the connect log line."""
        mountpoint = listener.mountpoint
        topics = self._templates.rendered(self._mountpoint if mountpoint is None else mountpoint, cid)
        previous = self._attached.pop(cid, None)
        if previous is not None:
            self._metrics.inc("takeovers")
            self._log.info(
                "charge point {cid} reconnected from {peer}: closing its older connection from {old_peer}",
                cid=cid,
                peer=peer,
                old_peer=previous.peer,
            )
            self._metrics.inc("disconnects", reason="takeover")
            previous.session.end("replaced by a newer connection")
            previous.connection.close(1000, "replaced by a newer connection")
        upstream = Upstream(self._link, topics, self._config.upstream.qos, self._metrics)
        session = ChargePointSession(
            cid, self._settings, connection, upstream, self._clock, self._metrics, self._schemas
        )
        attached = Attached(connection, upstream, session, peer, self._clock.seconds(), listener, username)
        self._attached[cid] = attached
        self.sweep.claim(cid)
        self.subscriptions.subscribe(cid, topics.dnstream, self._config.dnstream.qos)
        attached.session.start()
        self._metrics.inc("connects")
        cn = None if certificate is None else _clipped(certificate.cn, 64)
        dn = None if certificate is None else _clipped(certificate.dn, 200)
        self._log.info(
            "charge point {cid} connected from {peer}{with_certificate}",
            cid=cid,
            peer=peer,
            with_certificate="" if certificate is None else f" with certificate CN={cn!r} DN={dn!r}",
            certificate_cn=cn,
            certificate_dn=dn,
        )
        self._publish_presence(cid, attached, "connected")
        # after the presence: a member that sees the claim publishes after ours
        self.cluster.claim(cid, topics.presence, peer)
        return attached.session

    def detach(self, cid: str, connection: IChargePoint, reason: str, cause: str = "charge_point") -> None:
        """A connection ended; forget it unless a newer one already took its place.

        ``reason`` goes to the log line and the presence; ``cause`` (a short fixed word: who or what
        ended it) is the ``reason`` label of the ``disconnects`` metric."""
        attached = self._attached.get(cid)
        if attached is None or attached.connection is not connection:
            return
        del self._attached[cid]
        self.cluster.release(cid)
        self.subscriptions.release(cid, self._config.dnstream.subscription_linger)
        attached.session.end(reason)
        self._metrics.inc("disconnects", reason=cause)
        self._log.info(
            "charge point {cid} disconnected from {peer}: {reason}",
            cid=cid,
            peer=attached.peer,
            reason=clip(reason, 300),
            cause=cause,
        )
        self._publish_presence(cid, attached, "disconnected", reason)

    def shutdown(self, reason: str = "gateway shutting down") -> None:
        """Close every charge point with 1001 (going away) and publish them offline."""
        self.cluster.stop()  # first: the node's offline state releases its claims, not one each
        for cid, attached in list(self._attached.items()):
            self.detach(cid, attached.connection, reason, "shutdown")
            attached.connection.close(1001, reason)
        self.subscriptions.drop_all_lingering()
        self.sweep.finish()
        self.publish_node_state("offline", SHUTDOWN)

    def _replaced(self, cid: str, by: str) -> None:
        """Member ``by`` holds a newer connection of ``cid``: close ours, keep no subscription nor queue.

        No ``disconnected`` presence: the charge point is connected, to ``by``."""
        attached = self._attached.pop(cid, None)
        if attached is None:
            return
        self.subscriptions.drop(cid)
        self._metrics.inc("takeovers")
        self._metrics.inc("disconnects", reason="takeover")
        self._log.info(
            "charge point {cid} reconnected to gateway member {member}: closing its connection from {peer}",
            cid=cid,
            member=by,
            peer=attached.peer,
            cause="takeover",
        )
        attached.session.end("replaced by a newer connection")
        attached.connection.close(1000, "replaced by a newer connection")

    def _outdated(self, cid: str) -> None:
        """Another member claimed ``cid`` before our claim: its ``connected`` presence may reach the broker
        after ours, so ours goes again."""
        attached = self._attached.get(cid)
        if attached is not None:
            self._publish_presence(cid, attached, "connected")

    # -- MQTT ------------------------------------------------------------

    def _deliver(self, cid: str, topic: str, payload: bytes) -> None:
        """A message on ``cid``'s downstream filter: to its live session, whichever connection that is."""
        attached = self._attached.get(cid)
        if attached is None:
            self._metrics.inc("envelopes_unroutable")
            self._log.info(
                "downstream message on {topic} for {cid}, which is not connected: dropped",
                topic=topic,
                cid=cid,
            )
            return
        attached.session.envelope_received(payload)

    def _link_state_changed(self, connected: bool) -> None:
        if not connected:
            return
        self.publish_node_state("online")
        for cid, attached in self._attached.items():
            self._publish_presence(cid, attached, "connected")
        if self._config.presence.enable and retained_on_wildcards(self._config.mqtt.broker):
            self.sweeps.run(self.sweep)

    def publish_node_state(self, status: str, reason: str = NODE_DOWN) -> None:
        """Publish this member's retained online/offline state (``reason`` says why it is offline)."""
        will = node_will(self._started_with, status, reason)
        if will is not None:
            self.states.publish(will.topic, will.payload, will.qos)

    def _publish_presence(self, cid: str, attached: Attached, status: str, reason: str = "") -> None:
        if not self._config.presence.enable:
            return
        at = attached.since if status == "connected" else self._clock.seconds()
        data = presence_body(cid, status, self._node, attached.peer, at, reason, self._member)
        self.states.publish(attached.upstream.topics.presence, data, self._config.presence.qos)


def node_will(config: GatewayConfig, status: str = "offline", reason: str = NODE_DOWN) -> Will | None:
    """The member's retained state message; as a last will it says the member went away (``node down``)."""
    if not config.presence.enable:
        return None
    node, member = config.gateway.node_name, config.gateway.member
    topic = node_topic(config.gateway.mountpoint, config.presence.node_topic, member)
    body = {"node": node, "member": member, "status": status}
    if status == "offline":
        body["reason"] = reason
    payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return Will(topic, payload, config.presence.qos, True)


def _clipped(text: str | None, limit: int) -> str | None:
    """A certificate's name as the log shows it: None stays None."""
    return None if text is None else clip(text, limit)
