"""Cluster: members on one (fake) broker; takeover claims, races, requests, the node-down sweep and
hostile control messages. Each member is a Router over its own FakeMqttLink, its own Clock."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.core.cluster import GRACE, SETTLE
from ocppgw.core.cluster_requests import Gathered
from ocppgw.core.router import Router, node_will
from ocppgw.metrics import Metrics
from tests.fakes import FakeBroker, FakeConnection, FakeMqttLink
from tests.test_router import T0, make_config

TAKEOVER = "ocpp/gateway/cluster/takeover"
REQUEST = "ocpp/gateway/cluster/request"


class Member:
    """One gateway member: a router on its own link and clock."""

    def __init__(self, broker: FakeBroker, name: str, extra: str = "", at: float = T0) -> None:
        config = make_config(extra=extra)
        self.config = replace(config, gateway=replace(config.gateway, node_name=name, member=name))
        self.clock = Clock()
        self.clock.advance(at)
        self.link = broker.join(FakeMqttLink())
        self.metrics = Metrics()
        self.router = Router(self.config, self.link, self.clock, self.metrics)
        self.name = name
        self.connections: dict[str, FakeConnection] = {}

    def attach(self, cid: str) -> FakeConnection:
        connection = FakeConnection(f"{cid}@{self.name}")
        self.router.attach(cid, connection, self.config.listeners[0], f"10.0.0.1:{len(self.connections) + 1}")
        self.connections[cid] = connection
        return connection

    def up(self) -> None:
        self.link.set_connected(True)

    def presence(self, cid: str) -> list[dict[str, Any]]:
        return [m.json() for m in self.link.published_to(f"ocpp/cp/{cid}/Presence")]


class ClusterTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.broker = FakeBroker()
        self.members: list[Member] = []
        self.addCleanup(self._shutdown)

    def member(self, name: str, extra: str = "", at: float = T0) -> Member:
        member = Member(self.broker, name, extra, at)
        self.members.append(member)
        return member

    def start(self, *names: str) -> list[Member]:
        """Members online on the broker, their membership settled."""
        members = [self.member(name) for name in names]
        for member in members:
            member.up()
        self.flush()
        self.advance(SETTLE)
        return members

    def flush(self) -> int:
        """The end of a reactor turn on every member (batched claims go out), then the broker
        delivering, until nothing more is sent; how many deliveries."""
        count = 0
        for _ in range(100):
            for member in self.members:
                member.clock.advance(0)
            if not self.broker.queue:
                return count
            count += self.broker.flush()
        self.fail("members kept sending")

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Every member's clock, step by step, the broker delivering between steps."""
        while seconds > 1e-9:
            for member in self.members:
                member.clock.advance(min(step, seconds))
            self.flush()
            seconds -= step

    def _shutdown(self) -> None:
        for member in self.members:
            member.router.shutdown("test over")
            for call in member.clock.getDelayedCalls():
                self.fail(f"timer left on {member.name}: {call}")


class MembershipTests(ClusterTestCase):
    def states(self, member: Member) -> list[str]:
        return [m.json()["status"] for m in member.link.published_to(f"ocpp/gateway/{member.name}/Presence")]

    def test_lost_retained_state_answered_by_the_member_that_sees_the_newcomer(self) -> None:
        """The broker lost gwa's retained 'online' (NATS logs a retained message it could not store and
        copies retained messages between its servers late): gwb, starting after, still learns gwa,
        because gwa, seeing gwb come online, publishes its state again; the exchange then stops."""
        (a,) = self.start("gwa")
        del self.broker.retained["ocpp/gateway/gwa/Presence"]
        b = self.member("gwb")
        b.up()
        self.flush()
        self.advance(SETTLE)
        self.assertEqual(list(a.router.cluster.online()), ["gwa", "gwb"])
        self.assertEqual(list(b.router.cluster.online()), ["gwa", "gwb"])
        # gwa answered once; gwb, seeing gwa only then, answered once too; gwa knew gwb: no more
        self.assertEqual(self.states(a), ["online", "online"])
        self.assertEqual(self.states(b), ["online", "online"])
        self.assertEqual(self.flush(), 0)

    def test_known_member_not_answered(self) -> None:
        """A state repeating what a member knows (gwb's reconnect) draws no answer; several newcomers
        seen in one turn, one answer."""
        a, b = self.start("gwa", "gwb")
        before = self.states(a)
        b.router.publish_node_state("online")
        self.flush()
        self.advance(SETTLE)
        self.assertEqual(self.states(a), before)
        c, d = self.member("gwc"), self.member("gwd")
        del self.broker.retained["ocpp/gateway/gwa/Presence"]
        c.up()
        d.up()
        self.flush()
        self.advance(SETTLE)
        self.assertEqual(self.states(a), [*before, "online"])
        for member in (a, b, c, d):
            self.assertEqual(list(member.router.cluster.online()), ["gwa", "gwb", "gwc", "gwd"])

    def test_no_answer_after_shutdown(self) -> None:
        """A newcomer seen just before shutdown: the answer due in that reactor turn is not sent after
        the member's 'offline'."""
        (a,) = self.start("gwa")
        b = self.member("gwb")
        b.up()
        self.broker.flush()  # gwa saw gwb: its answer is due at the next turn
        a.router.shutdown("test over")
        a.clock.advance(0)
        self.assertEqual(self.states(a)[-1], "offline")
        self.assertEqual(a.clock.getDelayedCalls(), [])


class ControlSubscriptionTests(ClusterTestCase):
    CONTROL = sorted(
        ["ocpp/gateway/+/Presence", TAKEOVER, REQUEST, "ocpp/gateway/cluster/reply/gwa"]
    )

    def control_subscriptions(self, extra: str) -> list[tuple[str, int]]:
        member = self.member("gwa", extra)
        member.up()
        return sorted(
            (topic_filter, qos)
            for topic_filter, qos in member.link.subscribe_calls
            if topic_filter.startswith("ocpp/gateway/")
        )

    def test_qos_1_on_mqtt_brokers(self) -> None:
        self.assertEqual(self.control_subscriptions(""), [(t, 1) for t in self.CONTROL])

    def test_qos_0_on_nats(self) -> None:
        """There a QoS 1 subscription is a JetStream consumer (``topics.control_subscription_qos``);
        the control publishes stay QoS 1."""
        self.assertEqual(
            self.control_subscriptions("[mqtt]\nbroker = nats\n"), [(t, 0) for t in self.CONTROL]
        )
        b = self.member("gwb", "[mqtt]\nbroker = nats\n")
        b.up()
        self.flush()
        self.advance(SETTLE)
        b.attach("CP1")
        self.flush()
        claims = self.members[0].link.published_to(TAKEOVER) + b.link.published_to(TAKEOVER)
        self.assertTrue(claims)
        self.assertEqual({m.qos for m in claims}, {1})


class TakeoverTests(ClusterTestCase):
    def test_claim_elsewhere_ends_lingering_subscription(self) -> None:
        """CP1 leaves a (its subscription lingers there) and connects to b: b's claim makes a unsubscribe
        at once; a's own later claims and b's release change nothing more."""
        a, b = self.start("a", "b")
        a.router.detach("CP1", a.attach("CP1"), "bye")
        self.flush()
        self.assertEqual((a.link.unsubscribe_calls, a.router.subscriptions.lingering()), ([], 1))
        self.advance(1)
        b.router.detach("CP1", b.attach("CP1"), "bye")
        self.flush()
        self.assertEqual(a.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.assertEqual(a.router.subscriptions.lingering(), 0)
        self.assertEqual(b.router.subscriptions.lingering(), 1)

    def test_newer_connection_elsewhere_closes_this_one(self) -> None:
        """CP1 on a, then on b: a closes its connection with 1000, unsubscribes, drops its queue, and
        publishes no 'disconnected' presence (CP1 is connected, to b)."""
        a, b = self.start("a", "b")
        old = a.attach("CP1")
        self.flush()
        a.router.session("CP1").envelope_received(
            b'{"MessageTypeId":2,"UniqueId":"u1","Action":"Reset","Payload":{"type":"Soft"}}'
        )
        self.advance(1)
        new = b.attach("CP1")
        self.flush()
        self.assertEqual(old.closes, [(1000, "replaced by a newer connection")])
        self.assertEqual(new.closes, [])
        self.assertIsNone(a.router.session("CP1"))
        self.assertIsNotNone(b.router.session("CP1"))
        self.assertIn("ocpp/cs/CP1", a.link.unsubscribe_calls)
        self.assertIn("ocpp/cs/CP1", b.link.subscriptions)
        self.assertEqual([p["status"] for p in a.presence("CP1")], ["connected"])
        self.assertEqual(a.metrics.value("disconnects", reason="takeover"), 1)
        # the old connection's close arrives later: nothing more happens
        a.router.detach("CP1", old, "closed by gateway (1000)")
        self.assertEqual([p["status"] for p in a.presence("CP1")], ["connected"])
        # a command now reaches the charge point on b only
        self.broker.queue.append(
            (None, "ocpp/cs/CP1", b'{"MessageTypeId":2,"UniqueId":"u2","Action":"Reset","Payload":{}}')
        )
        self.flush()
        self.assertEqual(len(new.sent), 1)
        self.assertEqual(json.loads(new.sent[0])[1], "u2")

    def test_racing_connects_end_with_one(self) -> None:
        """Both attach before either hears the other: the larger (at, member) stays, on both orders
        of arrival and on equal times."""
        for first, second in (("a", "b"), ("b", "a")):
            self.broker.queue.clear()
            a, b = self.start("a", "b") if first == "a" else reversed(self.start("b", "a"))
            members = {"a": a, "b": b}
            connections = {name: members[name].attach("CP1") for name in (first, second)}
            self.flush()
            live = [name for name, c in connections.items() if not c.closes]
            self.assertEqual(live, ["b"])  # same at: the member name decides
            self.assertIsNone(a.router.session("CP1"))
            self._shutdown()
            self.members.clear()

    def test_earlier_time_loses_whatever_the_name(self) -> None:
        """b attaches at T0, a at T0 + 0.5 before hearing b: a, the later, stays."""
        a, b = self.start("a", "b")
        old = b.attach("CP1")
        a.clock.advance(0.5)
        new = a.attach("CP1")
        self.flush()
        self.assertEqual((old.closes, new.closes), ([(1000, "replaced by a newer connection")], []))

    def test_skewed_clock_attach_after_seen_claim_wins(self) -> None:
        """a's clock is 60 s behind b's: a charge point moving from b to a still stays on a."""
        self.member("a", at=T0 - 60)
        self.member("b")
        for m in self.members:
            m.up()
        self.flush()
        a, b = self.members
        old = b.attach("CP1")
        self.flush()
        new = a.attach("CP1")
        self.flush()
        self.assertEqual((old.closes, new.closes), ([(1000, "replaced by a newer connection")], []))

    def test_loser_presence_republished_by_winner(self) -> None:
        """The winner hears the older claim: it publishes its 'connected' presence again, so the retained
        presence ends on the winner whatever order the two reached the broker in."""
        a, b = self.start("a", "b")
        a.attach("CP1")
        b.attach("CP1")
        self.flush()
        self.assertEqual([p["member"] for p in b.presence("CP1")], ["b", "b"])
        self.assertEqual(json.loads(self.broker.retained["ocpp/cp/CP1/Presence"])["member"], "b")

    def test_own_echo_and_released(self) -> None:
        """A member ignores its own claims; after a local detach a foreign claim closes nothing."""
        (a,) = self.start("a")
        connection = a.attach("CP1")
        self.flush()
        self.assertEqual(connection.closes, [])
        a.router.detach("CP1", connection, "bye")
        a.link.deliver(TAKEOVER, b'{"clientid":"CP1","member":"z","at":1e12}')
        self.assertEqual(connection.closes, [])

    def test_one_message_per_turn(self) -> None:
        """Fifty charge points attaching in one turn cost one takeover message, which tells the other
        member all fifty; a batch's well-formed entries count even beside malformed ones, and a
        member's single claim (the format before batching) still closes what it replaces."""
        a, b = self.start("a", "b")
        for n in range(50):
            b.attach(f"X{n}")
        b.clock.advance(0)
        self.assertEqual(len(b.link.published_to(TAKEOVER)), 1)
        self.flush()
        self.assertEqual(sorted(a.router.cluster._claims), sorted(f"X{n}" for n in range(50)))
        old, older = a.attach("Q"), a.attach("R")
        self.flush()
        batch = {"member": "c", "claims": [7, {"clientid": "Q/1", "at": 1e12}, {"clientid": "Q", "at": 1e12}]}
        a.link.deliver(TAKEOVER, json.dumps(batch).encode())
        self.assertEqual(old.closes, [(1000, "replaced by a newer connection")])
        a.link.deliver(TAKEOVER, b'{"clientid":"R","member":"c","at":1e12}')
        self.assertEqual(older.closes, [(1000, "replaced by a newer connection")])

    def test_claims_kept_while_held_forgotten_when_released(self) -> None:
        """Every member keeps the newest claim of each charge point held somewhere, however old, and
        forgets it when its holder releases it, stops cleanly, or this member's link drops."""
        a, b = self.start("a", "b")
        connections = {f"X{i}": b.attach(f"X{i}") for i in range(50)}
        self.flush()
        self.advance(600)
        claims = a.router.cluster._claims
        self.assertEqual(sorted(claims), sorted(connections))
        self.assertEqual((claims["X1"].member, claims["X1"].presence, claims["X1"].peer),
                         ("b", "ocpp/cp/X1/Presence", "10.0.0.1:2"))  # fmt: skip
        for cid in ("X0", "X1"):
            b.router.detach(cid, connections[cid], "bye")
        self.flush()
        self.assertEqual(len(claims), 48)
        self.assertNotIn("X0", b.router.cluster._claims)
        # a release of an older claim leaves the newer one
        a.attach("X2")
        self.flush()
        release = {"clientid": "X2", "member": "b", "at": T0, "released": True}
        a.link.deliver(TAKEOVER, json.dumps(release).encode())
        self.assertEqual(claims["X2"].member, "a")
        # a clean stop: b's offline state releases the rest, without one release each
        b.link.clear()
        b.router.shutdown()
        self.assertEqual([m.json().get("released") for m in b.link.published_to(TAKEOVER)], [])
        self.flush()
        self.assertEqual(list(claims), ["X2"])
        a.link.deliver(TAKEOVER, b'{"clientid":"Y","member":"z","at":1}')
        a.link.set_connected(False)
        self.assertEqual(a.router.cluster._claims, {})
        self.members.remove(b)


class RequestTests(ClusterTestCase):
    def gather(self, member: Member, op: str, args: dict[str, Any] | None = None) -> Any:
        results: list[Gathered] = []
        member.router.cluster.ask(op, args).addCallback(results.append)
        return results

    def test_replies_from_every_member(self) -> None:
        """A request is answered by every other member's handler; it fires once all have replied."""
        a, b, c = self.start("a", "b", "c")
        for m in (b, c):
            m.router.cluster.serve("echo", lambda args, m=m: {"me": m.name, **args})
        results = self.gather(a, "echo", {"x": 1})
        self.flush()
        (gathered,) = results
        self.assertEqual(
            {k: (r.node, r.result) for k, r in gathered.replies.items()},
            {"b": ("b", {"me": "b", "x": 1}), "c": ("c", {"me": "c", "x": 1})},
        )
        self.assertEqual(gathered.missing, [])
        self.assertEqual([c for c in a.clock.getDelayedCalls() if "Requests" in repr(c)], [])

    def test_long_list_in_parts(self) -> None:
        """A long list result comes in parts of about 256 KB (under NATS' 1 MB message limit), joined in
        order; an empty list is one part."""
        a, b, c = self.start("a", "b", "c")
        items = [{"clientid": f"CP{i}", "pad": "x" * 200} for i in range(3000)]
        b.router.cluster.serve("clients", lambda args: items)
        c.router.cluster.serve("clients", lambda args: [])
        results = self.gather(a, "clients")
        self.flush()
        (gathered,) = results
        self.assertEqual(gathered.replies["b"].result, items)
        self.assertEqual(gathered.replies["c"].result, [])
        parts = [m for m in b.link.published if m.topic == "ocpp/gateway/cluster/reply/a"]
        self.assertEqual(len(parts), 3)
        self.assertTrue(all(len(m.payload) < 300 * 1024 for m in parts))

    def test_malformed_parts_ignored(self) -> None:
        """Parts that do not add up (for a pending request) are ignored: the member counts as silent."""
        a, _b = self.start("a", "b")
        self.broker.links.pop()  # b says nothing itself
        results = self.gather(a, "clients")
        (request,) = [m.json() for m in a.link.published if m.topic == REQUEST]
        for extra in ('"part":0', '"part":3,"parts":2', '"part":true,"parts":2', '"part":0,"parts":1e9'):
            body = f'{{"id":"{request["id"]}","member":"b","node":"b","result":[1],{extra}}}'
            a.link.deliver("ocpp/gateway/cluster/reply/a", body.encode())
        a.link.deliver(
            "ocpp/gateway/cluster/reply/a",
            f'{{"id":"{request["id"]}","member":"b","node":"b","result":[1],"part":0,"parts":2}}'.encode(),
        )
        a.clock.advance(1)
        self.assertEqual((results[0].replies, results[0].missing), ({}, ["b"]))

    def test_timeout(self) -> None:
        """A member believed online that does not answer: the request fires after the timeout with
        the replies it has, the silent member in ``missing``; a late reply is ignored."""
        a, b, c = self.start("a", "b", "c")
        b.router.cluster.serve("echo", lambda args: 1)
        self.broker.links.remove(c.link)  # c hears nothing and says nothing, its will not yet sent
        results = self.gather(a, "echo")
        self.flush()
        self.assertEqual(results, [])
        a.clock.advance(0.999)
        self.assertEqual(results, [])
        a.clock.advance(0.001)
        (gathered,) = results
        self.assertEqual((list(gathered.replies), gathered.missing), (["b"], ["c"]))
        a.link.deliver("ocpp/gateway/cluster/reply/a", b'{"id":"old","member":"c","node":"c","result":1}')

    def test_member_going_offline_is_not_waited_for(self) -> None:
        """A member whose will arrives while a request waits for it: the request fires without it."""
        a, b = self.start("a", "b")
        self.broker.links.remove(b.link)
        results = self.gather(a, "status")
        self.flush()
        self.broker.links.append(b.link)
        self.broker.kill(b.link, node_will(b.config))
        self.flush()
        (gathered,) = results
        self.assertEqual((gathered.replies, gathered.missing), ({}, []))

    def test_unknown_op_and_failing_handler(self) -> None:
        """An op nobody serves, or a handler that raises: the reply says so, nothing else breaks."""
        a, b = self.start("a", "b")

        def broken(args: dict[str, Any]) -> Any:
            raise RuntimeError("boom")

        b.router.cluster.serve("broken", broken)
        nope, failed = self.gather(a, "nope"), self.gather(a, "broken")
        self.flush()
        results = nope + failed
        self.assertEqual([g.replies["b"].error for g in results], ["unknown op 'nope'", "failed"])
        self.flushLoggedErrors(RuntimeError)

    def test_alone_answers_at_once(self) -> None:
        (a,) = self.start("a")
        results = self.gather(a, "clients")
        self.assertEqual(len(results), 1)

    def test_no_membership_waits_for_the_timeout(self) -> None:
        """With presence off no membership is known: a request collects replies for the whole timeout."""
        a = self.member("a", extra="[presence]\nenable = false\n")
        b = self.member("b", extra="[presence]\nenable = false\n")
        a.up(), b.up()
        b.router.cluster.serve("echo", lambda args: 2)
        results = self.gather(a, "echo")
        self.flush()
        self.assertEqual(results, [])
        self.advance(1.0)
        self.assertEqual(results[0].replies["b"].result, 2)


class NodeDownSweepTests(ClusterTestCase):
    def stale(self, cid: str, member: str, node: str | None = None) -> None:
        body = {"clientid": cid, "status": "connected", "node": node or member, "peer": "p", "at": "x"}
        if node is None:
            body["member"] = member
        self.broker.retained[f"ocpp/cp/{cid}/Presence"] = json.dumps(body).encode()

    def swept(self, member: Member) -> list[tuple[str, str, str]]:
        return [
            (m.topic, m.json()["member"], m.json()["reason"])
            for m in member.link.published
            if m.topic.startswith("ocpp/cp/") and m.json()["status"] == "disconnected"
        ]

    def test_smallest_survivor_sweeps_once(self) -> None:
        """c dies: a (the smallest survivor) marks c's connected charge points 'node down' once; b does
        nothing; another member's and a reclaimed charge point are left alone."""
        a, b, c = self.start("a", "b", "c")
        for cid in ("CP1", "CP2", "CP3"):
            c.attach(cid)
        self.flush()
        self.stale("OLD", "c", node="c")  # written before presence named members: matched by node
        self.stale("B1", "b")
        self.broker.kill(c.link, node_will(c.config))
        b.attach("CP3")  # CP3 came back, to b, before the sweep read it
        self.flush()
        self.advance(3)
        self.assertEqual(
            sorted(self.swept(a)),
            [
                ("ocpp/cp/CP1/Presence", "c", "node down"),
                ("ocpp/cp/CP2/Presence", "c", "node down"),
                ("ocpp/cp/OLD/Presence", "c", "node down"),
            ],
        )
        self.assertEqual(self.swept(b), [])
        self.assertEqual(json.loads(self.broker.retained["ocpp/cp/CP3/Presence"])["member"], "b")
        # the will again (a reconnect of a's link re-delivers it, retained): nothing more
        a.link.set_connected(False)
        a.up()
        self.flush()
        a.router.cluster._link_state_changed(True)
        self.advance(3)
        self.assertEqual(len(self.swept(a)), 3)
        self.members.remove(c)

    def test_known_claims_marked_at_once(self) -> None:
        """c dies: a marks what c's claims say it held GRACE seconds after the will, without the
        retained presence (slow to come on NATS); the retained sweep then adds what a did not know,
        and nothing is published twice. Released or reclaimed charge points are left alone, and a
        claim's presence topic that is not its charge point's is not written to."""
        a, b, c = self.start("a", "b", "c")
        for cid in ("CP1", "CP2", "CP3", "GONE"):
            c.attach(cid)
        self.flush()
        c.router.detach("GONE", c.connections["GONE"], "bye")
        self.flush()
        a.link.deliver(
            TAKEOVER, b'{"clientid":"EVIL","member":"c","at":1e12,"presence":"ocpp/cp/CP9/Presence"}'
        )
        self.advance(3)  # the start-up sweeps are over
        for cid in ("CP1", "CP2"):  # the retained presence does not come (yet)
            del self.broker.retained[f"ocpp/cp/{cid}/Presence"]
        self.stale("OLD", "c")  # from before a started: a knows no claim of it
        self.broker.kill(c.link, node_will(c.config))
        self.flush()
        b.attach("CP3")  # CP3 came back, to b, during the grace
        self.flush()
        self.assertEqual(self.swept(a), [])
        self.advance(GRACE)
        marked = [(topic, reason) for topic, _, reason in self.swept(a)]
        self.assertEqual(  # the known ones first, then (the retained sweep) the one a did not know
            marked,
            [("ocpp/cp/CP1/Presence", "node down"), ("ocpp/cp/CP2/Presence", "node down"),
             ("ocpp/cp/OLD/Presence", "node down")],
        )  # fmt: skip
        body = a.link.published_to("ocpp/cp/CP2/Presence")[-1].json()
        self.assertEqual((body["node"], body["member"], body["peer"]), ("c", "c", "10.0.0.1:2"))
        stale = self.broker.retained["ocpp/cp/OLD/Presence"].replace(b"OLD", b"CP1").replace(b"disc", b"c")
        self.assertEqual(json.loads(stale)["status"], "connected")
        self.assertTrue(a.router.sweeps._running)
        a.link.deliver("ocpp/cp/CP1/Presence", stale)  # CP1's retained presence, late: already done
        self.advance(3)
        self.assertEqual(
            sorted(topic for topic, _, _ in self.swept(a)),
            ["ocpp/cp/CP1/Presence", "ocpp/cp/CP2/Presence", "ocpp/cp/OLD/Presence"],
        )
        self.assertEqual(self.swept(b), [])
        self.assertEqual(a.router.cluster._deaths["c"].held, {})
        self.members.remove(c)

    def test_claims_not_trusted_after_a_link_gap(self) -> None:
        """a's link dropped after c's claims (a release may have been missed): a marks from the
        retained presence only."""
        a, c = self.start("a", "c")
        c.attach("CP1")
        self.flush()
        a.link.set_connected(False)
        a.up()
        self.advance(3)
        del self.broker.retained["ocpp/cp/CP1/Presence"]
        self.broker.kill(c.link, node_will(c.config))
        self.flush()
        self.advance(3)
        self.assertEqual(self.swept(a), [])
        self.members.remove(c)

    def test_elected_survivor_gone_too(self) -> None:
        """a and c die; b, now the smallest online, sweeps both."""
        a, b, c = self.start("a", "b", "c")
        a.attach("A1"), c.attach("C1")
        self.flush()
        self.broker.kill(c.link, node_will(c.config))
        self.broker.kill(a.link, node_will(a.config))
        self.flush()
        self.advance(5)
        self.assertEqual(
            sorted(self.swept(b)),
            [("ocpp/cp/A1/Presence", "a", "node down"), ("ocpp/cp/C1/Presence", "c", "node down")],
        )
        self.members.remove(a), self.members.remove(c)

    def test_clean_shutdown_is_not_swept(self) -> None:
        """A member that stops cleanly publishes its charge points itself: no sweep."""
        a, b = self.start("a", "b")
        b.attach("CP1")
        b.router.shutdown()
        self.flush()
        self.advance(5)
        self.assertEqual(self.swept(a), [])

    def test_dead_member_back_stops_the_sweep(self) -> None:
        """The will arrives, then the member's online state before the sweep could start: no sweep."""
        a, b = self.start("a", "b")
        b.attach("CP1")
        self.flush()
        self.broker.kill(b.link, node_will(b.config))
        self.flush()
        a.link.set_connected(False)  # not settled: the sweep waits
        a.up()
        self.broker.join(b.link)
        b.up()
        self.flush()
        self.advance(5)
        self.assertEqual(self.swept(a), [])

    def test_not_settled_waits(self) -> None:
        """A member that connects as another dies weighs the states it got only after SETTLE seconds:
        a, which knew no smaller member, swept (after the GRACE); the newcomer (smaller) finds nothing
        left."""
        a, b = self.start("a", "b")
        b.attach("CP1")
        self.advance(3)  # the start-up sweeps are over
        self.broker.kill(b.link, node_will(b.config))
        late = self.member("0late")
        late.up()
        self.flush()
        self.advance(GRACE)
        self.assertEqual(self.swept(a), [("ocpp/cp/CP1/Presence", "b", "node down")])
        self.advance(SETTLE + 3)
        self.assertEqual(self.swept(late), [])
        self.members.remove(b)

    def test_whole_cluster_restarts(self) -> None:
        """Every member new, the will of a member that never came back retained: the smallest sweeps."""
        self.stale("CP1", "gone")
        self.broker.retained["ocpp/gateway/gone/Presence"] = (
            b'{"node":"gone","member":"gone","status":"offline","reason":"node down"}'
        )
        a, b = self.start("a", "b")
        self.advance(3)
        self.assertEqual(self.swept(a), [("ocpp/cp/CP1/Presence", "gone", "node down")])
        self.assertEqual(self.swept(b), [])


class HostileControlTests(ClusterTestCase):
    """Whatever arrives on a control topic: logged and ignored, never raised, nothing changed."""

    BAD = [
        b"",
        b"{",
        b"\xff\xfe",
        b"[1,2]",
        b"null",
        b'"text"',
        b"[" * 100000,
        b'{"clientid":"CP1","member":"z","at":"soon"}',
        b'{"clientid":"CP1","member":"z","at":true}',
        b'{"clientid":"CP1","member":"z","at":NaN}',
        b'{"clientid":"CP1","member":"z","at":1' + b"0" * 400 + b"}",
        b'{"clientid":"CP1","member":"a/b","at":1e12}',
        b'{"clientid":"CP1","member":"","at":1e12}',
        b'{"clientid":"C/P","member":"z","at":1e12}',
        b'{"clientid":7,"member":"z","at":1e12}',
        b'{"clientid":"CP1","member":["z"],"at":1e12}',
        b'{"member":"z","claims":"CP1"}',
        b'{"member":"a/b","claims":[{"clientid":"CP1","at":1e12}]}',
        b'{"member":"z","claims":[1,null,[],{"clientid":"CP1"},{"clientid":"C#","at":1e12}]}',
        b'{"id":"1","from":"a/b","op":"kick"}',
        b'{"id":1,"from":"z","op":"kick"}',
        b'{"id":"1","from":"z","op":"kick","args":[1]}',
        b'{"id":"1","from":"z","op":{"x":1}}',
        b'{"node":"z","status":"gone"}',
        b'{"node":["z"],"status":"offline","reason":"node down"}',
        b'{"node":"z","member":"y","status":"offline","reason":"node down"}',
        b'{"id":"1","member":"z"}',
        b'{"id":"1","member":"z","node":"z","result":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"{" + b'"k":1,' * 20000 + b'"x":1}',
        b'{"id":"1","member":"z","node":"z","result":[1],"part":0}',
        b'{"id":"1","member":"z","node":"z","result":[1],"part":3,"parts":2}',
        b'{"id":"1","member":"z","node":"z","result":{},"part":0,"parts":2}',
        b'{"id":"1","member":"z","node":"z","result":[],"part":0,"parts":1e9}',
        b'{"id":"1","member":"z","node":"z","result":[],"part":true,"parts":2}',
    ]

    def test_hostile_batch_logs_one_line(self) -> None:
        """A batch (under the 64 KB limit) of 2,000 malformed entries: one warning naming how many,
        nothing else happens; its well-formed entry still counts."""
        warnings: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if "control message" in event.get("log_format", ""):
                warnings.append(event.get("why", event["log_format"]))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        (a,) = self.start("a")
        connection = a.attach("CP1")
        self.flush()
        entries: list[Any] = [1, {"clientid": "C/P", "at": 1e12}] * 1000 + [{"clientid": "CP1", "at": 1e12}]
        a.link.deliver(TAKEOVER, json.dumps({"member": "z", "claims": entries}).encode())
        self.assertEqual(len(warnings), 1)
        self.assertTrue(warnings[0].startswith("2000 of 2001 entries of a batch"), warnings[0])
        self.assertEqual(connection.closes, [(1000, "replaced by a newer connection")])

    def test_hostile_payloads(self) -> None:
        errors: list[Any] = []
        warnings: list[Any] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_failure") is not None:
                errors.append(event)
            elif "control message" in event.get("log_format", ""):
                warnings.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        a, _b = self.start("a", "b")
        connection = a.attach("CP1")
        self.flush()
        topics = [TAKEOVER, REQUEST, "ocpp/gateway/cluster/reply/a", "ocpp/gateway/z/Presence"]
        for topic in topics:
            for payload in self.BAD:
                a.link.deliver(topic, payload)
        self.assertEqual(errors, [])
        self.assertGreater(len(warnings), len(self.BAD))
        self.assertEqual(connection.closes, [])
        self.assertEqual(a.router.cluster.online(), {"a": "a", "b": "b"})
        # no reply to anything malformed; a well-formed request for an op nobody serves: an error
        replies = [json.loads(payload) for _, topic, payload in self.broker.queue]
        self.assertEqual([("result" in r, r["error"][:10]) for r in replies], [(False, "unknown op")] * 2)
        self.assertEqual(self.flushLoggedErrors(), [])
