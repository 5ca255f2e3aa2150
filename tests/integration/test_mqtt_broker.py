"""Both paho links (thread-driven and reactor-driven) against a private Mosquitto through real sockets."""

from __future__ import annotations

import itertools
import threading
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from ocppgw.config import MqttSection
from ocppgw.core.ports import Will
from ocppgw.metrics import Metrics
from ocppgw.mqtt.link import PahoLink
from ocppgw.mqtt.paho_client import BufferedSocket
from ocppgw.mqtt.reactor_loop import PahoReactorLink
from ocppgw.mqtt.thread_loop import PahoThreadLink
from tests.support import MosquittoBroker, MqttRecorder, poll_until

_ids = itertools.count()

WILL = Will("gw/test/Presence", b"offline", 1, True)


class _BrokerTests:
    """Cleanups run in reverse order: the link stops before the recorder, the recorder before the broker."""

    link_class: type[PahoLink]

    def broker(self, persistence: bool = False) -> MosquittoBroker:
        return MosquittoBroker(self, persistence=persistence)

    @inlineCallbacks
    def recorder(self, broker: MosquittoBroker, topic_filter: str, **kwargs: Any) -> Any:
        recorder = MqttRecorder("127.0.0.1", broker.port, topic_filter, **kwargs)
        self.addCleanup(recorder.stop)
        yield recorder.start()
        return recorder

    def link(self, broker: MosquittoBroker, keepalive: int = 10) -> PahoLink:
        self.metrics = Metrics()
        config = MqttSection(
            host="127.0.0.1",
            port=broker.port,
            client_id=f"ocppgw-link-test-{next(_ids)}",
            keepalive=keepalive,
            reconnect_delay_min=0.05,
            reconnect_delay_max=0.5,
            max_buffered_messages=1000,
        )
        link = self.link_class(reactor, config, self.metrics, will=WILL)
        self.addCleanup(link.stop, 5)
        return link

    @inlineCallbacks
    def test_publish_reaches_subscriber(self) -> Any:
        """QoS 0, 1 and 2 messages published through the link reach another client, flags intact."""
        broker = self.broker()
        yield broker.start()
        recorder = yield self.recorder(broker, "up/#")
        link = self.link(broker)
        link.start()
        yield poll_until(lambda: link.connected)
        self.assertTrue(link.publish("up/a", b"zero", 0))
        self.assertTrue(link.publish("up/b", b"one", 1))
        self.assertTrue(link.publish("up/c", b"two", 2, retain=True))
        messages = yield recorder.wait_for(lambda ms: len(ms) >= 3)
        self.assertEqual(
            [tuple(m) for m in messages],
            [("up/a", b"zero", False), ("up/b", b"one", False), ("up/c", b"two", False)],
        )
        yield poll_until(lambda: link._outbox.outstanding() == 0)

    @inlineCallbacks
    def test_subscription_delivers_in_reactor_thread(self) -> Any:
        """A subscribed handler receives messages from the broker, in the reactor thread."""
        broker = self.broker()
        yield broker.start()
        recorder = yield self.recorder(broker, "unused")
        link = self.link(broker)
        got: list[tuple[str, bytes, threading.Thread]] = []
        link.subscribe("down/+", 1, lambda t, p: got.append((t, p, threading.current_thread())))
        link.start()
        yield poll_until(lambda: link.connected)
        # retained, so it arrives whether the SUBACK came before or after this publish
        yield recorder.publish("down/CP1", b"first", retain=True)
        yield poll_until(lambda: len(got) >= 1)
        yield recorder.publish("down/CP2", b"second")
        yield poll_until(lambda: len(got) >= 2)
        self.assertEqual([(t, p) for t, p, _ in got], [("down/CP1", b"first"), ("down/CP2", b"second")])
        self.assertEqual({thread for _, _, thread in got}, {threading.current_thread()})

    @inlineCallbacks
    def test_broker_restart_loses_nothing_and_resubscribes(self) -> Any:
        """50 QoS 1 messages accepted around and during an outage arrive once each, in order, after the
        broker returns; the link subscribes again on its own."""
        broker = self.broker(persistence=True)
        yield broker.start()
        # A persistent session (subscription and queued messages survive the restart), so the
        # recorder misses nothing whether it reconnects before or after the link.
        recorder = yield self.recorder(broker, "up/#", client_id="recorder-restart", clean_session=False)
        link = self.link(broker)
        got: list[bytes] = []
        link.subscribe("down/cmd", 1, lambda t, p: got.append(p))
        states: list[bool] = []
        link.add_connection_observer(states.append)
        link.start()
        yield poll_until(lambda: link.connected)
        yield recorder.publish("down/cmd", b"before", retain=True)
        yield poll_until(lambda: b"before" in got)

        yield broker.stop()
        for n in range(25):  # the link may not have noticed yet: these go to paho, which keeps them
            self.assertTrue(link.publish("up/seq", b"%d" % n, 1))
        yield poll_until(lambda: not link.connected)
        for n in range(25, 50):  # noticed: held by the link
            self.assertTrue(link.publish("up/seq", b"%d" % n, 1))
        self.assertEqual(link._outbox.outstanding(), 50)

        yield broker.start()
        yield poll_until(lambda: link.connected)
        messages = yield recorder.wait_for(lambda ms: len([m for m in ms if m.topic == "up/seq"]) >= 50)
        yield poll_until(lambda: link._outbox.outstanding() == 0)
        self.assertEqual([m.payload for m in messages if m.topic == "up/seq"], [b"%d" % n for n in range(50)])

        # The broker forgot the link's clean session: only a new SUBSCRIBE brings "after".
        yield recorder.publish("down/cmd", b"after", retain=True)
        yield poll_until(lambda: b"after" in got)
        self.assertEqual(states, [True, False, True])
        self.assertEqual(self.metrics.value("mqtt_reconnects"), 1)
        self.assertEqual(recorder.sessions_present, [False, True])  # the broker kept its session

    @inlineCallbacks
    def test_broker_crash_with_messages_in_flight(self) -> Any:
        """Messages written to a broker that dies before acknowledging them are sent again after it
        returns: none lost, none doubled, in order."""
        broker = self.broker(persistence=True)
        yield broker.start()
        recorder = yield self.recorder(broker, "up/#", client_id="recorder-crash", clean_session=False)
        link = self.link(broker)
        link.start()
        yield poll_until(lambda: link.connected)
        for n in range(10):
            link.publish("up/seq", b"%d" % n, 1)
        yield recorder.wait_for(lambda ms: len(ms) >= 10)
        yield poll_until(lambda: link._outbox.outstanding() == 0)
        # One round trip on the recorder's connection: the broker has its acks for 0..9 before the save.
        yield recorder.publish("sync", b"")
        yield broker.save()

        broker.freeze()  # reads nothing from now on: 10..29 are written but never acknowledged
        for n in range(10, 30):
            self.assertTrue(link.publish("up/seq", b"%d" % n, 1))
        yield broker.crash()
        yield poll_until(lambda: not link.connected)
        self.assertEqual(link._outbox.outstanding(), 20)
        for n in range(30, 50):
            self.assertTrue(link.publish("up/seq", b"%d" % n, 1))

        yield broker.start()
        yield recorder.wait_for(lambda ms: len(ms) >= 50)
        yield poll_until(lambda: link._outbox.outstanding() == 0)
        self.assertEqual([m.payload for m in recorder.messages()], [b"%d" % n for n in range(50)])
        self.assertEqual(recorder.sessions_present, [False, True])
        self.assertEqual(self.metrics.value("mqtt_reconnects"), 1)

    @inlineCallbacks
    def test_start_while_broker_down(self) -> Any:
        """start() with no broker does not fail; the link keeps trying and connects once it is up."""
        broker = self.broker()
        link = self.link(broker)
        link.start()
        yield poll_until(lambda: self.metrics.value("mqtt_connect_failures") >= 2)
        self.assertFalse(link.connected)
        # retained, so the recorder (which cannot connect earlier) gets it whenever it subscribes
        self.assertTrue(link.publish("up/early", b"held", 1, retain=True))
        yield broker.start()
        recorder = yield self.recorder(broker, "up/#")
        yield poll_until(lambda: link.connected)
        yield recorder.wait_for(lambda ms: any(m.payload == b"held" for m in ms))
        self.assertTrue(link.publish("up/late", b"live", 1))
        messages = yield recorder.wait_for(lambda ms: any(m.payload == b"live" for m in ms))
        self.assertEqual([m.payload for m in messages], [b"held", b"live"])

    @inlineCallbacks
    def test_silent_broker_dropped_by_keepalive(self) -> Any:
        """A broker that stops answering (SIGSTOP) is noticed through the keepalive, not left hanging;
        once it answers again the link is back, with messages accepted meanwhile delivered."""
        broker = self.broker()
        yield broker.start()
        link = self.link(broker, keepalive=1)
        states: list[bool] = []
        link.add_connection_observer(states.append)
        link.start()
        yield poll_until(lambda: link.connected)
        broker.freeze()
        self.addCleanup(broker.thaw)
        yield poll_until(lambda: not link.connected, timeout=15)
        self.assertTrue(link.publish("up/late", b"kept", 1, retain=True))
        broker.thaw()
        yield poll_until(lambda: link.connected, timeout=15)
        recorder = yield self.recorder(broker, "up/#")
        messages = yield recorder.wait_for(lambda ms: any(m.payload == b"kept" for m in ms))
        self.assertEqual([m.topic for m in messages], ["up/late"])
        self.assertEqual(states, [True, False, True])

    @inlineCallbacks
    def test_stop_is_clean(self) -> Any:
        """stop() flushes, sends DISCONNECT (no will), and leaves no thread or delayed call of the link."""
        broker = self.broker()
        yield broker.start()
        recorder = yield self.recorder(broker, "#")
        link = self.link(broker)
        states: list[bool] = []
        link.add_connection_observer(states.append)
        link.start()
        yield poll_until(lambda: link.connected)
        for n in range(100):
            link.publish("up/stop", b"%d" % n, 1)
        yield link.stop(5)
        self.assertEqual(self.metrics.value("mqtt_lost_on_stop"), 0)
        self.assertFalse(link.connected)
        self.assertEqual(states, [True, False])
        threads = [t.name for t in threading.enumerate() if link._config.client_id in t.name]
        self.assertEqual(threads, [])
        ours = [c for c in reactor.getDelayedCalls() if getattr(c.func, "__self__", None) is link]
        self.assertEqual(ours, [])
        # a marker sent after the stop comes back; a will would have been published before it
        yield recorder.publish("marker", b"m")
        messages = yield recorder.wait_for(lambda ms: any(m.topic == "marker" for m in ms))
        self.assertEqual(len([m for m in messages if m.topic == "up/stop"]), 100)
        self.assertNotIn(WILL.topic, [m.topic for m in messages])


class PahoThreadLinkBrokerTests(_BrokerTests, TestCase):
    link_class = PahoThreadLink


class PahoReactorLinkBrokerTests(_BrokerTests, TestCase):
    link_class = PahoReactorLink

    @inlineCallbacks
    def test_paho_reads_and_writes_through_the_buffered_socket(self) -> Any:
        """With the installed paho the link really gets its buffered socket (a paho release that renamed
        _create_socket would fail here), and a round trip works through it."""
        broker = self.broker()
        yield broker.start()
        link = self.link(broker)
        got: list[bytes] = []
        link.subscribe("loop/back", 1, lambda t, p: got.append(p))
        link.start()
        yield poll_until(lambda: link.connected)
        self.assertIsInstance(link._client.socket(), BufferedSocket)
        recorder = yield self.recorder(broker, "loop/#")
        yield poll_until(lambda: not link.subscribing)
        for n in range(200):
            link.publish("loop/back", b"%d" % n, 1)
        yield poll_until(lambda: len(got) == 200)
        self.assertEqual(got, [b"%d" % n for n in range(200)])
        yield recorder.wait_for(lambda ms: len(ms) >= 200)
