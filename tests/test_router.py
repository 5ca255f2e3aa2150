"""Router: routing between charge point sessions and MQTT, takeover, presence, shutdown."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ocppgw.config import GatewayConfig, config_from_string
from ocppgw.core import dnstream_subscriptions
from ocppgw.core.messages import Call, decode_envelope
from ocppgw.core.ports import IBrokerLink, Will
from ocppgw.core.router import Router, node_will
from ocppgw.core.schemas import SchemaRegistry, shipped_schema_dir
from ocppgw.metrics import Metrics
from tests.fakes import FakeConnection, FakeMqttLink, Published, topic_matches

BASE = "[listeners.ws.default]\nbind = 33033\n"
BOOT = {"chargePointVendor": "VendorX", "chargePointModel": "ModelY"}
T0 = 1_700_000_000.5
T0_TEXT = "2023-11-14T22:13:20.500Z"
CONTROL = ("gateway/cluster/", "gateway/+/Presence")


def make_config(gateway: str = "", extra: str = "") -> GatewayConfig:
    """The brief's minimal gw.ini plus a fixed node name and the given sections."""
    return config_from_string(BASE + "[gateway]\nnode_name = gw1\n" + gateway + extra, environ={})


def frame(*parts: Any) -> str:
    return json.dumps(list(parts), separators=(",", ":"))


def dn_call(unique_id: str, action: str = "Reset", payload: dict | None = None) -> bytes:
    body = {
        "MessageTypeId": 2,
        "UniqueId": unique_id,
        "Action": action,
        "Payload": payload or {"type": "Soft"},
    }
    return json.dumps(body).encode()


class FakeMqttLinkTests(SynchronousTestCase):
    """The fake link itself behaves like the interface says."""

    def test_provides_interface(self) -> None:
        """FakeMqttLink provides IBrokerLink."""
        self.assertTrue(verifyObject(IBrokerLink, FakeMqttLink()))

    def test_publish_records_and_refuses(self) -> None:
        """Publishes are recorded; with refuse_publishes set they answer False."""
        link = FakeMqttLink()
        self.assertTrue(link.publish("a/b", b"x", 1))
        link.refuse_publishes = True
        self.assertFalse(link.publish("a/c", b"y", 0, retain=True))
        self.assertEqual(link.published, [Published("a/b", b"x", 1, False)])
        self.assertEqual(link.refused, [Published("a/c", b"y", 0, True)])
        self.assertRaises(ValueError, link.publish, "a/+", b"", 0)
        self.assertRaises(ValueError, link.publish, "a", b"", 3)
        self.assertRaises(TypeError, link.publish, "a", "text", 0)

    def test_deliver_matches_filters(self) -> None:
        """deliver() runs every handler whose filter matches."""
        link = FakeMqttLink()
        got: list[tuple[str, str, bytes]] = []
        link.subscribe("cs/+", 1, lambda t, p: got.append(("plus", t, p)))
        link.subscribe("cs/#", 1, lambda t, p: got.append(("hash", t, p)))
        self.assertEqual(link.deliver("cs/CP1", b"m"), 2)
        self.assertEqual(link.deliver("cs/CP1/x", b"n"), 1)
        self.assertEqual(link.deliver("other", b"o"), 0)
        self.assertEqual(
            got, [("plus", "cs/CP1", b"m"), ("hash", "cs/CP1", b"m"), ("hash", "cs/CP1/x", b"n")]
        )
        self.assertTrue(topic_matches("a/#", "a"))
        self.assertFalse(topic_matches("a/b", "a/b/c"))

    def test_connection_observers(self) -> None:
        """set_connected() tells the observers; a disconnect while disconnected tells nobody."""
        link = FakeMqttLink()
        seen: list[bool] = []
        link.add_connection_observer(seen.append)
        link.set_connected(False)
        link.set_connected(True)
        link.set_connected(True)
        link.set_connected(False)
        self.assertEqual(seen, [True, True, False])
        self.assertFalse(link.connected)

    def test_stop(self) -> None:
        """stop() records the timeout and fires at once."""
        link = FakeMqttLink(connected=True)
        self.assertIsNone(self.successResultOf(link.stop(5.0)))
        self.assertEqual((link.stop_timeouts, link.connected), ([5.0], False))


class RouterTestCase(SynchronousTestCase):
    """A Router over a FakeMqttLink and a Clock; cleanup checks no timer is left."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        # the cluster's traffic is tests/test_core_cluster.py's
        self.link = FakeMqttLink(set_aside=CONTROL)
        self.metrics = Metrics()
        self.addCleanup(self._no_timers_left)

    def _no_timers_left(self) -> None:
        if hasattr(self, "gateway"):
            self.gateway.shutdown("test over")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def make(self, config: GatewayConfig | None = None, schemas: SchemaRegistry | None = None) -> Router:
        self.config = config or make_config()
        self.gateway = Router(self.config, self.link, self.clock, self.metrics, schemas)
        return self.gateway

    def attach(self, cid: str = "CP1", listener: int = 0, peer: str = "10.0.0.1:5555") -> FakeConnection:
        connection = FakeConnection(f"{cid}@{peer}")
        self.gateway.attach(cid, connection, self.config.listeners[listener], peer)
        return connection

    def connected(self) -> list[str]:
        """Which of the ids these tests use are connected now, as the router answers per id."""
        return [cid for cid in ("CP1", "CP2", "CP3", "CP4") if self.gateway.session(cid) is not None]

    def envelopes(self, topic: str) -> list[Any]:
        return [decode_envelope(m.payload) for m in self.link.published_to(topic)]


class TopicTests(RouterTestCase):
    """Where each message goes, with the default and custom topics."""

    def test_default_topics(self) -> None:
        """Calls to ocpp/cp/<cid>, replies and errors to ocpp/cp/<cid>/Reply, commands from ocpp/cs/<cid>."""
        self.make()
        connection = self.attach()
        session = self.gateway.session("CP1")
        self.assertEqual(self.link.subscribe_calls, [("ocpp/cs/CP1", 1)])
        self.link.clear()
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        self.link.deliver("ocpp/cs/CP1", dn_call("c1"))
        self.link.deliver("ocpp/cs/CP1", dn_call("c2"))
        session.frame_received(frame(3, "c1", {"status": "Accepted"}))
        session.frame_received(frame(4, "c2", "InternalError", "x", {}))
        self.assertEqual(
            [(m.topic, m.qos, m.retain) for m in self.link.published],
            [("ocpp/cp/CP1", 1, False), ("ocpp/cp/CP1/Reply", 1, False), ("ocpp/cp/CP1/Reply", 1, False)],
        )
        self.assertEqual(
            self.link.published[0].json(),
            {"MessageTypeId": 2, "UniqueId": "b1", "Action": "BootNotification", "Payload": BOOT},
        )
        self.assertEqual(
            self.link.published[1].json(),
            {"MessageTypeId": 3, "UniqueId": "c1", "Action": "Reset", "Payload": {"status": "Accepted"}},
        )
        self.assertEqual(self.link.published[2].json()["ErrorCode"], "InternalError")
        self.assertEqual(
            connection.sent,
            [frame(2, "c1", "Reset", {"type": "Soft"}), frame(2, "c2", "Reset", {"type": "Soft"})],
        )
        self.assertEqual(self.metrics.value("published", kind="Call"), 1)
        self.assertEqual(self.metrics.value("published", kind="CallResult"), 1)
        self.assertEqual(self.metrics.value("published", kind="CallError"), 1)

    def test_custom_topics_and_qos(self) -> None:
        """Mountpoint, topics and QoS from the config; errors go to their own topic."""
        self.make(
            make_config(
                "mountpoint = site/\n",
                "[upstream]\ntopic = up/${cid}/call\nreply_topic = up/${clientid}/res\n"
                "error_topic = up/${cid}/err\nqos = 2\n"
                "[dnstream]\ntopic = down/${cid}\nqos = 0\n",
            )
        )
        self.attach()
        session = self.gateway.session("CP1")
        self.assertEqual(self.link.subscribe_calls, [("site/down/CP1", 0)])
        self.link.clear()
        session.frame_received(frame(2, "h1", "Heartbeat", {}))
        self.link.deliver("site/down/CP1", dn_call("c1"))
        self.link.deliver("site/down/CP1", dn_call("c2"))
        session.frame_received(frame(3, "c1", {"status": "Accepted"}))
        session.frame_received(frame(4, "c2", "NotSupported", "", {}))
        self.assertEqual(
            [(m.topic, m.qos) for m in self.link.published],
            [("site/up/CP1/call", 2), ("site/up/CP1/res", 2), ("site/up/CP1/err", 2)],
        )

    def test_topic_override_mapping(self) -> None:
        """A Call whose Action is overridden goes to the override topic under the mountpoint."""
        self.make(make_config(extra="[upstream.topic_override_mapping]\nBootNotification = cp/${cid}/Boot\n"))
        self.attach()
        session = self.gateway.session("CP1")
        self.link.clear()
        session.frame_received(frame(2, "b1", "BootNotification", BOOT))
        session.frame_received(frame(2, "h1", "Heartbeat", {}))
        self.assertEqual([m.topic for m in self.link.published], ["ocpp/cp/CP1/Boot", "ocpp/cp/CP1"])

    def test_listener_mountpoint_override(self) -> None:
        """A listener's mountpoint replaces the gateway's for every topic of its charge points."""
        self.make(make_config(extra="[listeners.ws.other]\nbind = 33034\nmountpoint = other/\n"))
        self.assertEqual(self.config.listeners[1].mountpoint, "other/")
        self.attach("CP1", listener=0)
        self.attach("CP2", listener=1)
        self.assertEqual(self.link.subscribe_calls, [("ocpp/cs/CP1", 1), ("other/cs/CP2", 1)])
        self.assertEqual(
            [m.topic for m in self.link.published], ["ocpp/cp/CP1/Presence", "other/cp/CP2/Presence"]
        )
        self.link.clear()
        self.gateway.session("CP2").frame_received(frame(2, "h1", "Heartbeat", {}))
        self.assertEqual([m.topic for m in self.link.published], ["other/cp/CP2"])

    def test_empty_listener_mountpoint(self) -> None:
        """An empty listener mountpoint overrides the gateway's with nothing."""
        self.make(make_config(extra="[listeners.ws.bare]\nbind = 33035\nmountpoint =\n"))
        self.attach("CP1", listener=1)
        self.assertEqual(self.link.subscribe_calls, [("cs/CP1", 1)])

    def test_mountpoint_with_cid(self) -> None:
        """A mountpoint may hold ${cid}."""
        self.make(make_config("mountpoint = tenant/${cid}/\n"))
        self.attach("CP1")
        self.assertEqual(self.link.subscribe_calls, [("tenant/CP1/cs/CP1", 1)])

    def test_wildcard_dnstream_filter(self) -> None:
        """A downstream filter with a wildcard routes every matching topic to the charge point."""
        self.make(make_config(extra="[dnstream]\ntopic = cs/${cid}/#\n"))
        connection = self.attach("CP1")
        self.assertEqual(self.link.subscribe_calls, [("ocpp/cs/CP1/#", 1)])
        self.link.deliver("ocpp/cs/CP1/Reset", dn_call("c1"))
        self.assertEqual(connection.sent, [frame(2, "c1", "Reset", {"type": "Soft"})])

    def test_unicode_cid(self) -> None:
        """A non-ASCII charge point id appears as it is in the topics."""
        self.make()
        self.attach("Säule-Ω")
        self.assertEqual(self.link.subscribe_calls, [("ocpp/cs/Säule-Ω", 1)])


class AttachDetachTests(RouterTestCase):
    """Subscriptions and presence follow the charge point's connection."""

    def test_subscribe_on_attach_unsubscribe_after_linger(self) -> None:
        """Attaching subscribes the downstream topic; detaching unsubscribes it once
        ``subscription_linger`` (60 s) has passed without the charge point coming back."""
        self.make()
        connection = self.attach()
        self.assertEqual(list(self.link.subscriptions), ["ocpp/cs/CP1"])
        self.assertEqual(self.connected(), ["CP1"])
        self.gateway.detach("CP1", connection, "closed by charge point (1000)")
        self.assertEqual(self.connected(), [])
        self.assertIsNone(self.gateway.session("CP1"))
        self.assertEqual((self.metrics.total("connects"), self.metrics.total("disconnects")), (1, 1))
        self.assertEqual(self.link.unsubscribe_calls, [])
        self.assertEqual(self.metrics.value("lingering_subscriptions"), 1)
        self.clock.advance(59.9)
        self.assertEqual(self.link.unsubscribe_calls, [])
        self.clock.advance(0.1)
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.assertEqual(self.link.subscriptions, {})
        self.assertEqual(self.metrics.value("lingering_subscriptions"), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_linger(self) -> None:
        """``subscription_linger = 0``: detaching unsubscribes at once."""
        self.make(make_config(extra="[dnstream]\nsubscription_linger = 0\n"))
        connection = self.attach()
        self.gateway.detach("CP1", connection, "closed by charge point (1000)")
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.assertEqual(self.link.subscriptions, {})
        self.clock.advance(0)  # the claim and the release go out
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lingering_message_dropped(self) -> None:
        """A message on a lingering subscription is counted as unroutable and dropped, nothing sent."""
        self.make()
        connection = self.attach()
        self.gateway.detach("CP1", connection, "bye")
        self.link.deliver("ocpp/cs/CP1", dn_call("c1"))
        self.assertEqual(self.metrics.total("envelopes_unroutable"), 1)
        self.assertEqual(connection.sent, [])

    def test_lingering_expire_in_order_once_a_second_at_most(self) -> None:
        """Subscriptions go in the order their charge points left, in passes at most a second apart."""
        self.make()
        for cid, then in (("CP1", 0.3), ("CP2", 5), ("CP3", 0)):
            self.gateway.detach(cid, self.attach(cid), "bye")  # CP1 at 0 s, CP2 at 0.3 s, CP3 at 5.3 s
            self.clock.advance(then)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(60 - 5.3)  # CP1's time has come
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.clock.advance(0.3)  # CP2's too, but the next pass is a second after the last
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.clock.advance(0.7)
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1", "ocpp/cs/CP2"])
        self.clock.advance(5)
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1", "ocpp/cs/CP2", "ocpp/cs/CP3"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lingering_expire_in_batches(self) -> None:
        """Many due at once are unsubscribed ``EXPIRY_BATCH`` per reactor turn, not all in one."""
        self.patch(dnstream_subscriptions, "EXPIRY_BATCH", 2)
        self.make()
        for cid in ("CP1", "CP2", "CP3", "CP4", "CP5"):
            self.gateway.detach(cid, self.attach(cid), "bye")
        passes: list[int] = []  # how many were unsubscribed when each next pass was asked for
        call_later = self.clock.callLater

        def next_pass(delay: float, f: Any, *args: Any) -> Any:
            passes.append(len(self.link.unsubscribe_calls))
            self.assertEqual(delay, 0)
            return call_later(delay, f, *args)

        self.patch(self.clock, "callLater", next_pass)
        self.clock.advance(60)  # Clock runs the zero-delay passes too; a reactor runs I/O between them
        self.assertEqual(passes, [2, 4])
        self.assertEqual(len(self.link.unsubscribe_calls), 5)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lingering_bounded(self) -> None:
        """Past ``MAX_LINGERING`` the oldest lingering subscription goes at once."""
        self.patch(dnstream_subscriptions, "MAX_LINGERING", 2)
        self.make()
        for cid in ("CP1", "CP2", "CP3"):
            self.gateway.detach(cid, self.attach(cid), "bye")
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.assertEqual(sorted(self.link.subscriptions), ["ocpp/cs/CP2", "ocpp/cs/CP3"])
        self.attach("CP2")  # back: no longer lingering, never dropped for the bound
        self.gateway.detach("CP4", self.attach("CP4"), "bye")
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])

    def test_lingering_claimed_elsewhere(self) -> None:
        """Another member's claim of a charge point lingering here ends its subscription at once; a
        claim of one attached here is the takeover rule's, not this."""
        self.make()
        self.gateway.detach("CP1", self.attach("CP1"), "bye")
        self.attach("CP2")
        self.gateway.cluster.elsewhere("CP1")
        self.gateway.cluster.elsewhere("CP2")
        self.gateway.cluster.elsewhere("CP9")
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.assertEqual(self.gateway.subscriptions.topic("CP2"), "ocpp/cs/CP2")

    def test_shutdown_unsubscribes_lingering(self) -> None:
        self.make()
        self.gateway.detach("CP1", self.attach("CP1"), "bye")
        self.attach("CP2")
        self.gateway.shutdown("stop")
        self.assertEqual(sorted(self.link.unsubscribe_calls), ["ocpp/cs/CP1", "ocpp/cs/CP2"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_detach_answers_pending_calls(self) -> None:
        """Detaching answers the Call in flight and the queued ones with GenericError envelopes."""
        self.make()
        connection = self.attach()
        self.link.deliver("ocpp/cs/CP1", dn_call("c1"))
        self.link.deliver("ocpp/cs/CP1", dn_call("c2", "ClearCache", {}))
        self.gateway.detach("CP1", connection, "connection lost")
        errors = self.envelopes("ocpp/cp/CP1/Reply")
        self.assertEqual(
            [(e.unique_id, e.code, e.action) for e in errors],
            [("c1", "GenericError", "Reset"), ("c2", "GenericError", "ClearCache")],
        )
        self.assertTrue(all("(connection lost)" in e.description for e in errors))

    def test_detach_unknown_or_stale(self) -> None:
        """Detaching a cid that is not attached, or with another connection, changes nothing."""
        self.make()
        self.attach()
        self.link.clear()
        self.gateway.detach("CP9", FakeConnection(), "x")
        self.gateway.detach("CP1", FakeConnection(), "x")
        self.assertEqual(self.link.unsubscribe_calls, [])
        self.assertEqual(self.link.published, [])
        self.assertEqual(self.connected(), ["CP1"])

    def test_detach_twice(self) -> None:
        """A second detach of the same connection does nothing."""
        self.make()
        connection = self.attach()
        self.gateway.detach("CP1", connection, "a")
        self.gateway.detach("CP1", connection, "b")
        self.clock.advance(120)
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.assertEqual(self.metrics.total("disconnects"), 1)

    def test_reattach_after_detach(self) -> None:
        """A charge point that comes back within the linger keeps its subscription (no UNSUBSCRIBE,
        no SUBSCRIBE); one that comes back later is subscribed again."""
        self.make()
        connection = self.attach()
        self.gateway.detach("CP1", connection, "bye")
        self.clock.advance(30)
        second = self.attach()
        self.clock.advance(120)
        self.assertEqual(self.link.subscribe_calls, [("ocpp/cs/CP1", 1)])
        self.assertEqual(self.link.unsubscribe_calls, [])
        self.link.deliver("ocpp/cs/CP1", dn_call("c1"))
        self.assertEqual(len(second.sent), 1)
        self.assertEqual(connection.sent, [])
        self.gateway.detach("CP1", second, "bye")
        self.clock.advance(60)
        third = self.attach()
        self.assertEqual(self.link.subscribe_calls, [("ocpp/cs/CP1", 1), ("ocpp/cs/CP1", 1)])
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.link.deliver("ocpp/cs/CP1", dn_call("c2"))
        self.assertEqual(len(third.sent), 1)

    def test_delivery_to_unknown_cid(self) -> None:
        """A message arriving for a charge point that has gone is counted and dropped."""
        self.make()
        connection = self.attach()
        _, handler = self.link.subscriptions["ocpp/cs/CP1"]
        self.gateway.detach("CP1", connection, "bye")
        self.link.clear()
        handler("ocpp/cs/CP1", dn_call("late"))
        self.assertEqual(self.metrics.total("envelopes_unroutable"), 1)
        self.assertEqual(connection.sent, [])
        self.assertEqual(self.link.published, [])

    def test_separate_charge_points(self) -> None:
        """Each charge point gets only its own downstream messages."""
        self.make()
        one = self.attach("CP1")
        two = self.attach("CP2")
        self.link.deliver("ocpp/cs/CP2", dn_call("c2"))
        self.assertEqual((one.sent, len(two.sent)), ([], 1))
        self.assertEqual(sorted(self.connected()), ["CP1", "CP2"])
        self.assertEqual(self.metrics.value("connected_charge_points"), 2)

    def test_settings_from_config(self) -> None:
        """Heartbeat interval, reply timeout and queue length come from the config."""
        self.make(
            make_config(
                "default_heartbeat_interval = 10s\nheartbeat_checking_times_backoff = 3\n",
                "[dnstream]\nreply_timeout = 5s\nmax_mqueue_len = 1\n",
            )
        )
        connection = self.attach()
        for uid in ("c1", "c2", "c3"):
            self.link.deliver("ocpp/cs/CP1", dn_call(uid))
        self.assertEqual(
            [(e.unique_id, e.description) for e in self.envelopes("ocpp/cp/CP1/Reply")],
            [("c3", "Not sent: downstream queue full (1 calls waiting)")],
        )
        self.clock.advance(5)
        self.assertEqual(self.envelopes("ocpp/cp/CP1/Reply")[-1].unique_id, "c1")
        self.assertIn("timed out", self.envelopes("ocpp/cp/CP1/Reply")[-1].description)
        self.clock.advance(24.9)
        self.assertEqual(connection.closes, [])
        self.clock.advance(0.1)
        self.assertEqual(connection.closes, [(1000, "no data for 30s")])
        self.gateway.detach("CP1", connection, "no data for 30s")

    def test_schema_checks(self) -> None:
        """message_format_checking = all with schemas rejects invalid Calls both ways."""
        registry = SchemaRegistry.load(shipped_schema_dir(), "urn:OCPP:1.6:2019:12:")
        self.make(make_config("message_format_checking = all\n"), registry)
        connection = self.attach()
        self.link.clear()
        self.gateway.session("CP1").frame_received(frame(2, "b1", "BootNotification", {}))
        self.link.deliver("ocpp/cs/CP1", dn_call("c1", "Reset", {"type": "Medium"}))
        self.assertEqual(len(connection.sent), 1)
        self.assertEqual(json.loads(connection.sent[0])[:3], [4, "b1", "OccurenceConstraintViolation"])
        self.assertEqual([m.topic for m in self.link.published], ["ocpp/cp/CP1/Reply"])
        self.assertEqual(self.link.published[0].json()["ErrorCode"], "PropertyConstraintViolation")

    def test_checking_needs_schemas(self) -> None:
        """Without a registry nothing is checked, whatever message_format_checking says."""
        self.make(make_config("message_format_checking = all\n"))
        self.attach()
        self.link.clear()
        self.gateway.session("CP1").frame_received(frame(2, "b1", "BootNotification", {}))
        self.assertEqual(self.envelopes("ocpp/cp/CP1"), [Call("b1", "BootNotification", {})])

    def test_refused_publish(self) -> None:
        """A full buffer refuses the Call (InternalError to the charge point); the presence and the
        takeover claim wait."""
        self.make()
        self.link.refuse_publishes = True
        connection = self.attach()
        self.clock.advance(0)
        self.assertEqual(self.metrics.total("presence_deferred"), 1)
        self.assertEqual(self.metrics.value("presence_waiting"), 1)
        self.assertEqual(len(self.gateway.cluster._outbox), 1)
        self.gateway.session("CP1").frame_received(frame(2, "h1", "Heartbeat", {}))
        self.assertEqual(
            connection.sent,
            [frame(4, "h1", "InternalError", "Central system unreachable, try again later", {})],
        )
        self.assertEqual(self.metrics.total("published"), 0)


class TakeoverTests(RouterTestCase):
    """A second connection with the same cid replaces the first."""

    def test_takeover(self) -> None:
        """The older connection is closed with a reason; its queue is answered; the subscription stays."""
        self.make()
        old = self.attach("CP1", peer="10.0.0.1:1111")
        self.link.deliver("ocpp/cs/CP1", dn_call("c1"))
        self.link.deliver("ocpp/cs/CP1", dn_call("c2"))
        self.link.clear()
        new = self.attach("CP1", peer="10.0.0.2:2222")
        self.assertEqual(old.closes, [(1000, "replaced by a newer connection")])
        self.assertEqual(new.closes, [])
        self.assertEqual(
            [(e.unique_id, e.code, e.action) for e in self.envelopes("ocpp/cp/CP1/Reply")],
            [("c1", "GenericError", "Reset"), ("c2", "GenericError", "Reset")],
        )
        self.assertIn("replaced by a newer connection", self.envelopes("ocpp/cp/CP1/Reply")[0].description)
        self.assertEqual(self.link.subscribe_calls, [("ocpp/cs/CP1", 1)])
        self.assertEqual(self.link.unsubscribe_calls, [])
        self.assertEqual(list(self.link.subscriptions), ["ocpp/cs/CP1"])
        self.assertEqual(self.connected(), ["CP1"])
        self.assertEqual(self.metrics.total("takeovers"), 1)

    def test_new_connection_gets_messages(self) -> None:
        """After the takeover downstream messages reach only the new connection."""
        self.make()
        old = self.attach("CP1")
        new = self.attach("CP1")
        self.link.deliver("ocpp/cs/CP1", dn_call("c3"))
        self.assertEqual((old.sent, new.sent), ([], [frame(2, "c3", "Reset", {"type": "Soft"})]))

    def test_old_close_does_not_leak_or_flap(self) -> None:
        """When the old connection finally closes, nothing is unsubscribed and presence stays connected."""
        self.make()
        old = self.attach("CP1", peer="10.0.0.1:1111")
        new = self.attach("CP1", peer="10.0.0.2:2222")
        self.gateway.detach("CP1", old, "replaced by a newer connection")
        presence = [m.json() for m in self.link.published_to("ocpp/cp/CP1/Presence")]
        self.assertEqual([p["status"] for p in presence], ["connected", "connected"])
        self.assertEqual(presence[-1]["peer"], "10.0.0.2:2222")
        self.assertEqual(self.link.unsubscribe_calls, [])
        self.assertEqual(self.connected(), ["CP1"])
        self.assertEqual(self.metrics.total("disconnects"), 1)
        self.assertEqual(self.metrics.value("disconnects", reason="takeover"), 1)
        self.gateway.detach("CP1", new, "bye")
        self.clock.advance(60)
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.assertEqual(self.link.subscriptions, {})

    def test_old_session_timers_cancelled(self) -> None:
        """The replaced session's timers are gone; only the new session's liveness timer is pending."""
        self.make()
        self.attach("CP1")
        self.link.deliver("ocpp/cs/CP1", dn_call("c1"))
        self.clock.advance(0)  # the claim goes out
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        self.attach("CP1")
        self.clock.advance(0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_takeover_across_listeners(self) -> None:
        """A takeover through a listener with another mountpoint moves the one subscription."""
        self.make(make_config(extra="[listeners.ws.other]\nbind = 33034\nmountpoint = other/\n"))
        self.attach("CP1", listener=0)
        new = self.attach("CP1", listener=1)
        self.assertEqual(self.link.subscribe_calls, [("ocpp/cs/CP1", 1), ("other/cs/CP1", 1)])
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cs/CP1"])
        self.assertEqual(list(self.link.subscriptions), ["other/cs/CP1"])
        self.link.deliver("other/cs/CP1", dn_call("c1"))
        self.assertEqual(len(new.sent), 1)
        self.gateway.detach("CP1", new, "bye")
        self.clock.advance(60)
        self.assertEqual(self.link.subscriptions, {})

    def test_many_takeovers(self) -> None:
        """Fifty reconnects leave one session, one subscription and one timer."""
        self.make()
        connections = [self.attach("CP1", peer=f"10.0.0.1:{n}") for n in range(50)]
        for old in connections[:-1]:
            self.gateway.detach("CP1", old, "replaced by a newer connection")
        self.assertEqual(self.connected(), ["CP1"])
        self.assertEqual(len(self.link.subscriptions), 1)
        self.assertEqual(self.link.unsubscribe_calls, [])
        self.clock.advance(0)  # the claims go out
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertTrue(all(c.closes == [(1000, "replaced by a newer connection")] for c in connections[:-1]))
        self.assertEqual(self.metrics.total("takeovers"), 49)


class PresenceTests(RouterTestCase):
    """Retained presence per charge point and per node."""

    def test_connected_presence(self) -> None:
        """Attaching publishes a retained 'connected' message with peer, node and time."""
        self.make()
        self.attach("CP1", peer="10.0.0.1:5555")
        self.assertEqual(len(self.link.published), 1)
        message = self.link.published[0]
        self.assertEqual((message.topic, message.qos, message.retain), ("ocpp/cp/CP1/Presence", 1, True))
        self.assertEqual(
            message.json(),
            {
                "clientid": "CP1", "status": "connected", "node": "gw1", "member": "gw1",
                "peer": "10.0.0.1:5555", "at": T0_TEXT,
            },
        )

    def test_disconnected_presence(self) -> None:
        """Detaching publishes a retained 'disconnected' message with the reason."""
        self.make()
        connection = self.attach("CP1", peer="[::1]:5555")
        self.clock.advance(2.25)
        self.gateway.detach("CP1", connection, "closed by charge point (1000)")
        message = self.link.published_to("ocpp/cp/CP1/Presence")[-1]
        self.assertTrue(message.retain)
        self.assertEqual(
            message.json(),
            {
                "clientid": "CP1",
                "status": "disconnected",
                "node": "gw1",
                "member": "gw1",
                "peer": "[::1]:5555",
                "at": "2023-11-14T22:13:22.750Z",
                "reason": "closed by charge point (1000)",
            },
        )

    def test_custom_presence_topic(self) -> None:
        """The presence topic and QoS are configurable."""
        self.make(make_config(extra="[presence]\ntopic = online/${cid}\nqos = 0\n"))
        self.attach("CP1")
        self.assertEqual(
            [(m.topic, m.qos, m.retain) for m in self.link.published], [("ocpp/online/CP1", 0, True)]
        )

    def test_presence_disabled(self) -> None:
        """With presence disabled nothing retained is published and there is no will."""
        self.make(make_config(extra="[presence]\nenable = false\n"))
        connection = self.attach("CP1")
        self.gateway.detach("CP1", connection, "bye")
        self.link.set_connected(True)
        self.gateway.shutdown()
        self.assertEqual(self.link.published, [])
        self.assertIsNone(node_will(self.config))

    def test_node_will(self) -> None:
        """The node's last will is a retained 'offline' message on the node topic, reason 'node down'."""
        self.make()
        will = b'{"node":"gw1","member":"gw1","status":"offline","reason":"node down"}'
        self.assertEqual(node_will(self.config), Will("ocpp/gateway/gw1/Presence", will, 1, True))
        self.assertEqual(
            node_will(self.config, "online").payload, b'{"node":"gw1","member":"gw1","status":"online"}'
        )

    def test_node_topic_not_mounted_under_a_per_charge_point_mountpoint(self) -> None:
        """With ``mountpoint = ocpp/${cid}/`` the node topic has no charge point to fill in: it is
        published without the mountpoint, never with a literal ``${cid}``."""
        self.make(make_config(gateway="mountpoint = ocpp/${cid}/\n"))
        assert node_will(self.config) is not None
        self.assertEqual(node_will(self.config).topic, "gateway/gw1/Presence")
        self.attach("CP1")
        self.assertIn("ocpp/CP1/cp/CP1/Presence", [m.topic for m in self.link.published])

    def test_online_on_link_connect(self) -> None:
        """Each link connect publishes the node online and republishes presence with the connect time."""
        self.make()
        self.attach("CP1", peer="10.0.0.1:1")
        self.attach("CP2", peer="10.0.0.2:2")
        self.link.clear()
        self.clock.advance(1)
        self.link.set_connected(True)
        self.assertEqual(
            [(m.topic, m.retain) for m in self.link.published],
            [
                ("ocpp/gateway/gw1/Presence", True),
                ("ocpp/cp/CP1/Presence", True),
                ("ocpp/cp/CP2/Presence", True),
            ],
        )
        self.assertEqual(self.link.published[0].json(), {"node": "gw1", "member": "gw1", "status": "online"})
        self.assertEqual(
            self.link.published[2].json(),
            {
                "clientid": "CP2",
                "status": "connected",
                "node": "gw1",
                "member": "gw1",
                "peer": "10.0.0.2:2",
                "at": T0_TEXT,
            },
        )
        self.link.clear()
        self.link.set_connected(False)
        self.assertEqual(self.link.published, [])
        self.link.set_connected(True)
        self.assertEqual(len(self.link.published), 3)

    def test_shutdown(self) -> None:
        """Shutdown closes every charge point with 1001, answers their calls, publishes the node offline."""
        self.make()
        one = self.attach("CP1")
        two = self.attach("CP2")
        self.link.deliver("ocpp/cs/CP1", dn_call("c1"))
        self.link.clear()
        self.gateway.shutdown()
        self.assertEqual(one.closes, [(1001, "gateway shutting down")])
        self.assertEqual(two.closes, [(1001, "gateway shutting down")])
        self.assertEqual(self.connected(), [])
        self.assertEqual(self.link.subscriptions, {})
        self.assertEqual(sorted(self.link.unsubscribe_calls), ["ocpp/cs/CP1", "ocpp/cs/CP2"])
        self.assertEqual(
            [(e.unique_id, e.code) for e in self.envelopes("ocpp/cp/CP1/Reply")], [("c1", "GenericError")]
        )
        for cid in ("CP1", "CP2"):
            presence = self.link.published_to(f"ocpp/cp/{cid}/Presence")
            self.assertEqual(
                [(p.json()["status"], p.json()["reason"]) for p in presence],
                [("disconnected", "gateway shutting down")],
            )
        last = self.link.published[-1]
        self.assertEqual(
            (last.topic, last.json(), last.retain),
            (
                "ocpp/gateway/gw1/Presence",
                {"node": "gw1", "member": "gw1", "status": "offline", "reason": "shutdown"},
                True,
            ),
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.metrics.value("disconnects", reason="shutdown"), 2)
        self.assertEqual(self.metrics.total("disconnects"), 2)

    def test_storm_with_a_full_link_drops_no_presence(self) -> None:
        """A mass disconnect and a shutdown beyond the link's room: every charge point's latest presence
        and the node's offline state are published as room comes, none backwards, none dropped."""
        self.make()
        cids = [f"CP{n}" for n in range(300)]
        connections = {cid: self.attach(cid) for cid in cids}
        self.link.room_left = 10
        for cid in cids[:200]:
            self.gateway.detach(cid, connections[cid], "network blip")
        self.gateway.shutdown()
        for _ in range(100):  # 501 messages, 7 at a time
            self.link.give_room(7)
        self.assertEqual(len(self.gateway.states), 0)
        for cid in cids:
            statuses = [m.json()["status"] for m in self.link.published_to(f"ocpp/cp/{cid}/Presence")]
            self.assertEqual(statuses[-1], "disconnected")
            self.assertEqual(statuses.count("disconnected"), 1)
        self.assertEqual(self.link.published[-1].topic, "ocpp/gateway/gw1/Presence")
        self.assertEqual(self.link.published[-1].json()["status"], "offline")
        self.assertEqual(self.link.refused, [])

    def test_shutdown_close_then_detach(self) -> None:
        """The detach a closed connection reports during shutdown changes nothing more."""
        self.make()
        connection = self.attach("CP1")
        self.gateway.shutdown("stopping")
        count = len(self.link.published)
        self.gateway.detach("CP1", connection, "closed")
        self.assertEqual(len(self.link.published), count)
        self.assertEqual(connection.closes, [(1001, "stopping")])


def presence(cid: str, status: str = "connected", node: str = "gw1") -> bytes:
    """A presence message as a node publishes it (retained) for ``cid``."""
    body = {
        "clientid": cid,
        "status": status,
        "node": node,
        "peer": "192.0.2.9:1",
        "at": "2026-01-01T00:00:00Z",
    }
    return json.dumps(body).encode()


class PresenceSweepTests(RouterTestCase):
    """At the first broker connect, what an earlier run of this node left connected is swept."""

    def retained(self, *messages: tuple[str, bytes]) -> None:
        """The broker delivers retained messages after the SUBACK."""
        for topic, payload in messages:
            self.link.deliver(topic, payload)

    def swept(self) -> list[tuple[str, str, str, bool]]:
        """(topic, clientid, reason, retain) of each 'disconnected' presence published."""
        return [
            (m.topic, m.json()["clientid"], m.json().get("reason", ""), m.retain)
            for m in self.link.published
            if "clientid" in m.json() and m.json()["status"] == "disconnected"
        ]

    def test_own_connected_presence_swept(self) -> None:
        """Only this node's 'connected' for charge points not attached now become 'node restarted'."""
        self.make()
        self.attach("CP4")
        self.link.set_connected(True)
        self.assertIn("ocpp/cp/+/Presence", self.link.subscriptions)
        self.retained(
            ("ocpp/cp/CP1/Presence", presence("CP1")),
            ("ocpp/cp/CP2/Presence", presence("CP2", node="gw2")),
            ("ocpp/cp/CP3/Presence", presence("CP3", status="disconnected")),
            ("ocpp/cp/CP4/Presence", presence("CP4")),
            ("ocpp/cp/CP5/Presence", b"not json"),
            ("ocpp/cp/CP6/Presence", presence("CP7")),  # not CP7's topic: left alone
        )
        self.assertEqual(self.swept(), [("ocpp/cp/CP1/Presence", "CP1", "node restarted", True)])
        body = self.link.published_to("ocpp/cp/CP1/Presence")[-1].json()
        self.assertEqual(
            (body["node"], body["peer"], body["at"]), ("gw1", "192.0.2.9:1", "2023-11-14T22:13:20.500Z")
        )
        self.retained(("ocpp/cp/CP1/Presence", presence("CP1")))  # the same again (overlapping filters)
        self.assertEqual(len(self.swept()), 1)
        self.clock.advance(2.0)
        self.assertNotIn("ocpp/cp/+/Presence", self.link.subscriptions)
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cp/+/Presence"])

    def test_charge_point_attached_meanwhile_left_connected(self) -> None:
        """A charge point that attached since start-up is never swept, even once gone again."""
        self.make()
        connection = self.attach("CP1")
        self.gateway.detach("CP1", connection, "bye")
        self.link.set_connected(True)
        self.link.clear()
        self.retained(("ocpp/cp/CP1/Presence", presence("CP1")))
        self.assertEqual(self.swept(), [])

    def test_window_ends_after_a_quiet_spell_or_the_limit(self) -> None:
        """Each presence message keeps the sweep open 2 s more, up to 30 s after it began."""
        self.make()
        self.link.set_connected(True)
        for n in range(20):
            self.clock.advance(1.9)
            self.retained((f"ocpp/cp/C{n}/Presence", presence(f"C{n}")))
        self.assertEqual(len(self.swept()), 15)  # 15 x 1.9 s < 30 s < 16 x 1.9 s
        self.assertEqual(self.link.unsubscribe_calls, ["ocpp/cp/+/Presence"])

    def test_off_on_rabbitmq(self) -> None:
        """[mqtt] broker = rabbitmq: no sweep (a wildcard subscription gets no retained message there)."""
        self.make(make_config(extra="[mqtt]\nbroker = rabbitmq\n"))
        self.link.set_connected(True)
        self.assertEqual(self.link.subscribe_calls, [])
        self.assertFalse(self.gateway.sweep.running)
        self.attach("CP1")  # a sweep that never runs keeps no list of charge points to skip
        self.assertEqual(self.gateway.sweep._claimed, set())

    def test_attached_list_dropped_once_over(self) -> None:
        """Charge points attached after the sweep ended are not remembered (memory stays bounded)."""
        self.make()
        self.attach("CP0")
        self.link.set_connected(True)
        self.assertEqual(self.gateway.sweep._claimed, {"CP0"})
        self.clock.advance(2.0)
        self.assertFalse(self.gateway.sweep.running)
        self.assertEqual(self.gateway.sweep._claimed, set())
        self.attach("CP1")
        self.assertEqual(self.gateway.sweep._claimed, set())

    def test_once_per_process(self) -> None:
        """A reconnect of the broker link does not sweep again."""
        self.make()
        self.link.set_connected(True)
        self.clock.advance(2)
        self.link.set_connected(False)
        self.link.set_connected(True)
        self.assertEqual([f for f, _ in self.link.subscribe_calls], ["ocpp/cp/+/Presence"])

    def test_listener_mountpoints(self) -> None:
        """Each mountpoint in use is swept; one where ${cid} is part of a level cannot be, and is not."""
        self.make(
            make_config(
                extra="[listeners.ws.t]\nbind = 33034\nmountpoint = tenant/${cid}/\n"
                "[listeners.ws.odd]\nbind = 33035\nmountpoint = site-${cid}/\n"
            )
        )
        self.link.set_connected(True)
        self.assertEqual(
            [f for f, _ in self.link.subscribe_calls], ["ocpp/cp/+/Presence", "tenant/+/cp/+/Presence"]
        )
        self.retained(
            ("tenant/CP1/cp/CP1/Presence", presence("CP1")),
            ("tenant/CPX/cp/CP2/Presence", presence("CP2")),  # not CP2's topic under any mountpoint
        )
        self.assertEqual(self.swept(), [("tenant/CP1/cp/CP1/Presence", "CP1", "node restarted", True)])

    def test_presence_disabled(self) -> None:
        """With presence off nothing is swept (nothing was published)."""
        self.make(make_config(extra="[presence]\nenable = false\n"))
        self.link.set_connected(True)
        self.assertEqual(self.link.subscribe_calls, [])
