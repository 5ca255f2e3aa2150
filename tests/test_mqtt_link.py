"""PahoThreadLink without a network: a fake paho client and a reactor whose callFromThread the test pumps."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from paho.mqtt import client as mqtt
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ocppgw.config import MqttSection
from ocppgw.core.ports import IBrokerLink, Will
from ocppgw.metrics import Metrics
from ocppgw.mqtt.link import PahoLink
from ocppgw.mqtt.thread_loop import PahoThreadLink
from tests.devpki import make_dev_certs
from tests.fakes import FakeOutMessage, FakePahoClient
from tests.support import ThreadedMemoryReactorClock


def in_thread(f: Any, *args: Any) -> None:
    """Run ``f`` in a separate thread, as paho's network loop would, and wait for it."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            f(*args)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, name="fake-paho")
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


CONFIG = MqttSection(
    host="broker.example",
    port=1884,
    client_id="gw-test",
    keepalive=45,
    reconnect_delay_min=0.25,
    reconnect_delay_max=8.0,
    max_buffered_messages=5,
)


class _LinkTestCase(SynchronousTestCase):
    config = CONFIG

    def setUp(self) -> None:
        self.reactor = ThreadedMemoryReactorClock()
        self.metrics = Metrics()
        self.clients: list[FakePahoClient] = []
        self.events: list[dict[str, Any]] = []
        self.patch(PahoLink, "_log", Logger(namespace="test", observer=self.events.append))
        self.link = self.make_link()

    def make_link(self, **kwargs: Any) -> PahoThreadLink:
        def factory(**client_kwargs: Any) -> FakePahoClient:
            client = FakePahoClient(**client_kwargs)
            self.clients.append(client)
            return client

        return PahoThreadLink(
            self.reactor, kwargs.pop("config", self.config), self.metrics, client_factory=factory, **kwargs
        )

    @property
    def client(self) -> FakePahoClient:
        return self.clients[-1]

    def connect(self) -> None:
        in_thread(self.client.broker_connects)
        self.reactor.pump()

    def started(self) -> FakePahoClient:
        self.link.start()
        return self.client

    def logged(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def tearDown(self) -> None:
        self.reactor.pump()
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class StartTests(_LinkTestCase):
    config = replace(CONFIG, username="gw", password="s3cret-pw")

    def test_provides_interface(self) -> None:
        """PahoThreadLink provides IBrokerLink."""
        self.assertTrue(verifyObject(IBrokerLink, self.link))

    def test_client_configured_from_config(self) -> None:
        """One paho v2 client (MQTT 3.1.1, clean session) with credentials, will, back-off and limits,
        then connect_async and loop_start."""
        self.link = self.make_link(will=Will("gw/node/Presence", b"offline", 1, True))
        client = self.started()
        self.assertEqual(
            client.kwargs,
            {
                "callback_api_version": mqtt.CallbackAPIVersion.VERSION2,
                "client_id": "gw-test",
                "clean_session": True,
                "protocol": mqtt.MQTTv311,
            },
        )
        self.assertEqual(
            client.calls,
            [
                ("username_pw_set", "gw", "s3cret-pw"),
                ("will_set", "gw/node/Presence", b"offline", 1, True),
                ("reconnect_delay_set", 0.25, 8.0),
                ("max_inflight_messages_set", 0),
                ("max_queued_messages_set", 0),
                ("connect_async", "broker.example", 1884, 45),
                ("loop_start",),
            ],
        )
        self.assertFalse(self.link.connected)

    def test_password_never_logged(self) -> None:
        """Connecting, failing, connecting and losing the broker log events; none holds the password."""
        client = self.started()
        in_thread(client.connect_fails)
        self.connect()
        in_thread(client.broker_lost)
        self.reactor.pump()
        self.assertTrue(self.events)
        for event in self.events:
            self.assertNotIn("s3cret-pw", formatEvent(event))
            self.assertNotIn("s3cret-pw", repr(event))

    def test_reload_tls(self) -> None:
        """reload_tls re-reads the [mqtt] TLS files into the context paho holds; a bad file is one line
        naming the key, and the files already loaded stay in use. Without TLS there is nothing to do."""
        self.assertEqual(self.link.reload_tls(), [])
        pki = make_dev_certs(self.mktemp(), [])
        self.link = self.make_link(config=replace(CONFIG, tls=True, cacertfile=pki.ca_cert))
        client = self.started()
        (context,) = [call[1] for call in client.calls if call[0] == "tls_set_context"]
        self.assertEqual(self.link.reload_tls(), [])
        reloaded = context._current
        self.assertIsNotNone(reloaded)
        pki.ca_cert.write_text("not a certificate\n")
        self.assertEqual(
            self.link.reload_tls(),
            [("cacertfile", f"no PEM certificate in {pki.ca_cert}; kept the previous files")],
        )
        self.assertIs(context._current, reloaded)

    def test_start_twice_is_harmless(self) -> None:
        """A second start() neither makes a second client nor raises."""
        self.started()
        self.link.start()
        self.assertEqual(len(self.clients), 1)


class EventTests(_LinkTestCase):
    def test_thousand_messages_one_hand_off(self) -> None:
        """1000 messages from paho's thread: one callFromThread pending; one pump delivers all, in order."""
        self.started()
        self.connect()
        got: list[tuple[str, bytes]] = []
        self.link.subscribe("cs/CP1", 1, lambda topic, payload: got.append((topic, payload)))

        def burst() -> None:
            for n in range(1000):
                self.client.deliver("cs/CP1", b"%d" % n)

        in_thread(burst)
        self.assertEqual(self.reactor.pending_from_thread, 1)
        self.assertEqual(got, [])
        self.assertEqual(self.reactor.pump(), 1)
        self.assertEqual(got, [("cs/CP1", b"%d" % n) for n in range(1000)])
        self.assertEqual(self.metrics.value("mqtt_received"), 1000)

    def test_handlers_run_in_reactor_thread_on_pump(self) -> None:
        """A handler never runs in paho's thread; it runs when the reactor drains, in the reactor's thread."""
        self.started()
        self.connect()
        threads: list[threading.Thread] = []
        self.link.subscribe("cs/CP1", 1, lambda topic, payload: threads.append(threading.current_thread()))
        in_thread(self.client.deliver, "cs/CP1", b"x")
        self.assertEqual(threads, [])
        self.reactor.pump()
        self.assertEqual(threads, [threading.current_thread()])

    def test_backlog_beyond_batch_continues_in_later_turns(self) -> None:
        """More events than max_batch are handled over several reactor turns, in order, none lost."""
        self.link._queue.max_batch = 10
        self.started()
        self.connect()
        got: list[bytes] = []
        self.link.subscribe("a", 0, lambda topic, payload: got.append(payload))
        in_thread(lambda: [self.client.deliver("a", b"%d" % n) for n in range(25)])
        self.assertEqual(self.reactor.pump(), 3)
        self.assertEqual(got, [b"%d" % n for n in range(25)])

    def test_handler_exception_logged_and_drain_continues(self) -> None:
        """A failing handler is logged with its filter and topic; the next messages are still delivered."""
        self.started()
        self.connect()
        got: list[bytes] = []

        def handler(topic: str, payload: bytes) -> None:
            if payload == b"bad":
                raise ZeroDivisionError("boom")
            got.append(payload)

        self.link.subscribe("cs/+", 1, handler)
        in_thread(lambda: [self.client.deliver("cs/CP1", p) for p in (b"one", b"bad", b"two")])
        self.reactor.pump()
        self.assertEqual(got, [b"one", b"two"])
        failures = [e for e in self.events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0]["log_failure"].value, ZeroDivisionError)
        self.assertEqual(failures[0]["topic_filter"], "cs/+")
        self.assertEqual(failures[0]["topic"], "cs/CP1")
        self.assertEqual(self.metrics.value("mqtt_handler_errors"), 1)

    def test_observers_told_on_connect_and_disconnect(self) -> None:
        """Observers hear True and False in the reactor thread, only when the reactor drains."""
        states: list[bool] = []
        self.link.add_connection_observer(states.append)
        client = self.started()
        in_thread(client.broker_connects)
        self.assertEqual(states, [])
        self.reactor.pump()
        self.assertEqual(states, [True])
        self.assertTrue(self.link.connected)
        in_thread(client.broker_lost)
        self.assertTrue(self.link.connected)
        self.reactor.pump()
        self.assertEqual(states, [True, False])
        self.assertFalse(self.link.connected)
        self.connect()
        self.assertEqual(states, [True, False, True])
        self.assertEqual(self.metrics.value("mqtt_reconnects"), 1)

    def test_failing_observer_does_not_stop_others(self) -> None:
        """An observer that raises is logged; the next observer is still called."""
        states: list[bool] = []

        def bad(connected: bool) -> None:
            raise RuntimeError("observer")

        self.link.add_connection_observer(bad)
        self.link.add_connection_observer(states.append)
        self.started()
        self.connect()
        self.assertEqual(states, [True])
        self.assertEqual(len([e for e in self.events if "log_failure" in e]), 1)

    def test_refused_connection_is_logged_not_connected(self) -> None:
        """A CONNACK refusal leaves the link disconnected, counted and logged with its reason."""
        client = self.started()
        in_thread(client.broker_refuses)
        self.reactor.pump()
        self.assertFalse(self.link.connected)
        self.assertEqual(self.metrics.value("mqtt_connect_refused"), 1)
        self.assertTrue(any("Not authorized (135)" in line for line in self.logged()))

    def test_connect_failures_logged_once(self) -> None:
        """Repeated connection failures are counted each time but logged once until a connect."""
        client = self.started()
        in_thread(lambda: [client.connect_fails() for _ in range(5)])
        self.reactor.pump()
        self.assertEqual(self.metrics.value("mqtt_connect_failures"), 5)
        self.assertEqual(len([line for line in self.logged() if "cannot reach" in line]), 1)

    def test_state_gauge(self) -> None:
        """The connected gauge follows the reactor's view."""
        self.started()
        self.assertEqual(self.metrics.value("mqtt_connected"), 0)
        self.connect()
        self.assertEqual(self.metrics.value("mqtt_connected"), 1)


class PublishTests(_LinkTestCase):
    def test_publish_while_connected_goes_to_paho(self) -> None:
        """A publish while connected is handed to paho at once with its QoS and retain flag."""
        client = self.started()
        self.connect()
        self.assertTrue(self.link.publish("cp/CP1", b"{}", 1, retain=True))
        self.assertEqual(client.published, [("cp/CP1", b"{}", 1, True)])
        self.assertEqual(self.metrics.value("mqtt_published"), 1)

    def test_refused_at_limit_and_accepted_after_acks(self) -> None:
        """QoS 1 messages beyond max_buffered_messages unacknowledged are refused; acks make room again."""
        client = self.started()
        self.connect()
        for n in range(5):
            self.assertTrue(self.link.publish("t", b"%d" % n, 1))
        self.assertFalse(self.link.publish("t", b"5", 1))
        self.assertEqual(self.metrics.value("mqtt_publish_refused"), 1)
        self.assertEqual(self.metrics.value("mqtt_outstanding"), 5)
        self.assertTrue(any("refusing MQTT messages" in line for line in self.logged()))
        in_thread(client.ack, 1)
        in_thread(client.ack, 2)
        self.assertFalse(self.link.publish("t", b"6", 1))  # acks not drained yet
        self.reactor.pump()
        self.assertTrue(self.link.publish("t", b"7", 1))
        self.assertTrue(self.link.publish("t", b"8", 1))
        self.assertFalse(self.link.publish("t", b"9", 1))
        self.assertEqual(self.metrics.value("mqtt_publish_refused"), 3)

    def test_qos0_while_connected_does_not_count(self) -> None:
        """QoS 0 messages handed to paho while connected wait for no ack and are never refused for it."""
        client = self.started()
        self.connect()
        for n in range(20):
            self.assertTrue(self.link.publish("t", b"%d" % n, 0))
        self.assertEqual(len(client.published), 20)
        self.assertEqual(self.metrics.value("mqtt_outstanding"), 0)
        in_thread(lambda: [client.ack(mid) for mid in range(1, 21)])  # paho reports QoS 0 writes too
        self.reactor.pump()
        self.assertEqual(self.metrics.value("mqtt_outstanding"), 0)

    def test_held_while_disconnected_flushed_in_order(self) -> None:
        """Messages of any QoS accepted while disconnected reach paho in order after the connect."""
        client = self.started()
        accepted = [("t/a", b"0", 0), ("t/b", b"1", 1), ("t/a", b"2", 0), ("t/c", b"3", 2), ("t/a", b"4", 0)]
        for topic, payload, qos in accepted:
            self.assertTrue(self.link.publish(topic, payload, qos))
        self.assertFalse(self.link.publish("t/a", b"5", 0))  # five held: the buffer is full
        self.assertEqual(client.published, [])
        self.connect()
        self.assertEqual(client.published, [(t, p, q, False) for t, p, q in accepted])
        self.assertEqual(self.metrics.value("mqtt_outstanding"), 2)  # the QoS>0 ones, not yet acked
        self.assertTrue(any("refused 1 MQTT messages" in line for line in self.logged()))

    def test_observer_publishes_after_held_ones(self) -> None:
        """What an observer publishes on connect goes out after the messages held during the outage."""
        client = self.started()
        self.link.add_connection_observer(lambda up: up and self.link.publish("node", b"online", 1))
        self.link.publish("t", b"held", 1)
        self.connect()
        self.assertEqual([p for _, p, _, _ in client.published], [b"held", b"online"])

    def test_qos0_without_paho_connection_held_and_later_ones_behind_it(self) -> None:
        """QoS 0 that paho cannot send (connection lost, not yet reported) is held; later ones wait behind."""
        client = self.started()
        self.connect()
        client.paho_connected = False  # lost, but the reactor has not heard yet
        self.assertTrue(self.link.publish("t", b"a", 0))
        client.paho_connected = True  # reconnected in paho's thread, CONNACK event not drained yet
        self.assertTrue(self.link.publish("t", b"b", 1))
        self.assertEqual(client.published, [])
        in_thread(client.broker_lost)
        self.connect()
        self.assertEqual([p for _, p, _, _ in client.published], [b"a", b"b"])

    def test_waits_for_paho_to_resend_before_flushing(self) -> None:
        """Held messages go to paho only after paho re-sent what it kept, so they cannot overtake it."""
        client = self.started()
        client._out_message_mutex = threading.Lock()  # type: ignore[attr-defined]
        kept = FakeOutMessage(1, mqtt.mqtt_ms_publish)
        client._out_messages = {7: kept}  # type: ignore[attr-defined]
        self.link.publish("t", b"held", 1)
        self.connect()
        self.assertEqual(client.published, [])
        self.assertTrue(self.link.publish("t", b"new", 1))
        self.reactor.advance(0.01)
        self.assertEqual(client.published, [])
        kept.state = mqtt.mqtt_ms_wait_for_puback
        self.reactor.advance(0.01)
        self.assertEqual([p for _, p, _, _ in client.published], [b"held", b"new"])
        self.assertTrue(self.link.publish("t", b"direct", 1))
        self.assertEqual(client.published[-1][1], b"direct")

    def test_topic_not_checked_per_publish(self) -> None:
        """The link leaves topics to the core, which checks each one once, when it renders it (and to
        paho's own publish, which refuses wildcards): a publish goes to paho as it is."""
        client = self.started()
        self.connect()
        self.assertTrue(self.link.publish("a/+", b"x", 1))
        self.assertEqual(client.published, [("a/+", b"x", 1, False)])

    def test_bad_qos_raises_before_it_is_held(self) -> None:
        """A bad QoS is a programming error: ValueError, nothing held (paho says so for a direct send)."""
        self.started()
        for qos in (3, -1):
            self.assertRaises(ValueError, self.link.publish, "a", b"", qos)
        self.assertEqual(self.metrics.value("mqtt_outstanding"), 0)


class RoomTests(_LinkTestCase):
    """``room`` and the room observers: how ``LatestStates`` learns it may publish again."""

    def test_room_counts_down_to_zero(self) -> None:
        """room() is the limit less what is outstanding; held messages count while disconnected."""
        client = self.started()
        self.assertEqual(self.link.room(), 5)
        self.link.publish("t", b"0", 0)
        self.assertEqual(self.link.room(), 4)
        self.connect()
        for n in range(5):
            self.link.publish("t", b"%d" % n, 1)
        self.assertEqual(self.link.room(), 0)
        self.assertEqual(len(client.published), 6)

    def test_observers_told_once_there_is_room(self) -> None:
        """After room() answered 0, the first drain that frees room calls the observers, once."""
        client = self.started()
        self.connect()
        told: list[int] = []
        self.link.add_room_observer(lambda: told.append(self.link.room()))
        for n in range(5):
            self.link.publish("t", b"%d" % n, 1)
        in_thread(client.ack, 1)
        self.reactor.pump()
        self.assertEqual(told, [])  # nobody asked for room
        self.link.publish("t", b"5", 1)
        self.assertEqual(self.link.room(), 0)
        in_thread(client.ack, 2)
        in_thread(client.ack, 3)
        self.reactor.pump()
        self.assertEqual(told, [2])
        in_thread(client.ack, 4)
        self.reactor.pump()
        self.assertEqual(told, [2])

    def test_observers_told_after_held_messages_are_sent(self) -> None:
        """QoS 0 messages held during an outage free their room once paho has sent them."""
        self.started()
        told: list[int] = []
        self.link.add_room_observer(lambda: told.append(self.link.room()))
        for n in range(5):
            self.link.publish("t", b"%d" % n, 0)
        self.assertEqual(self.link.room(), 0)
        self.connect()
        self.assertEqual(told, [5])

    def test_stop_waits_for_what_observers_publish(self) -> None:
        """A stop waits for the messages room observers publish as acknowledgements make room."""
        client = self.started()
        self.connect()
        backlog = [b"a", b"b", b"c"]

        def publish_backlog() -> None:
            while backlog and self.link.room() > 0:
                self.link.publish("state", backlog.pop(0), 1)

        self.link.add_room_observer(publish_backlog)
        for n in range(5):
            self.link.publish("t", b"%d" % n, 1)
        publish_backlog()
        done: list[object] = []
        self.link.stop(10).addCallback(done.append)
        for mid in range(1, 6):
            in_thread(client.ack, mid)
            self.reactor.pump()
        self.assertEqual(done, [])
        self.assertEqual([p for t, p, _, _ in client.published if t == "state"], [b"a", b"b", b"c"])
        for mid in range(6, 9):
            in_thread(client.ack, mid)
        self.reactor.pump()
        self.assertEqual(done, [None])
        self.assertEqual(self.metrics.value("mqtt_lost_on_stop"), 0)

    def test_failing_room_observer_logged(self) -> None:
        """An observer that raises is logged; the others still run."""
        client = self.started()
        self.connect()
        told: list[bool] = []
        self.link.add_room_observer(lambda: 1 / 0)
        self.link.add_room_observer(lambda: told.append(True))
        for n in range(5):
            self.link.publish("t", b"%d" % n, 1)
        self.link.room()
        in_thread(client.ack, 1)
        self.reactor.pump()
        self.assertEqual(told, [True])
        self.assertTrue(any("room observer" in line for line in self.logged()))


class SubscriptionTests(_LinkTestCase):
    def test_subscribe_while_connected_sends_once(self) -> None:
        """Subscribing while connected sends SUBSCRIBE; the same filter and QoS again does not."""
        client = self.started()
        self.connect()
        self.link.subscribe("cs/CP1", 1, lambda t, p: None)
        self.link.subscribe("cs/CP1", 1, lambda t, p: None)
        self.assertEqual(client.subscribes, [[("cs/CP1", 1)]])
        self.link.subscribe("cs/CP1", 2, lambda t, p: None)
        self.assertEqual(client.subscribes, [[("cs/CP1", 1)], [("cs/CP1", 2)]])

    def test_every_filter_resubscribed_on_each_connect(self) -> None:
        """All filters, exact and wildcard, are subscribed after each (re)connect, in packets of 100."""
        client = self.started()
        filters = [(f"cs/CP{n}", 1) for n in range(249)] + [("cs/+/x", 0)]
        for topic_filter, qos in filters:
            self.link.subscribe(topic_filter, qos, lambda t, p: None)
        self.assertEqual(client.subscribes, [])
        for _round in range(2):
            client.subscribes.clear()
            self.connect()
            self.assertEqual([len(s) for s in client.subscribes], [100, 100, 50])
            self.assertEqual(sorted(e for s in client.subscribes for e in s), sorted(filters))
            in_thread(client.broker_lost)
            self.reactor.pump()

    def test_unsubscribe(self) -> None:
        """Unsubscribe tells the broker, stops delivery, and the filter is not subscribed again."""
        client = self.started()
        self.connect()
        got: list[bytes] = []
        self.link.subscribe("cs/CP1", 1, lambda t, p: got.append(p))
        self.link.unsubscribe("cs/CP1")
        self.link.unsubscribe("cs/never")
        self.assertEqual(client.unsubscribes, ["cs/CP1"])
        in_thread(client.deliver, "cs/CP1", b"late")
        self.reactor.pump()
        self.assertEqual(got, [])
        self.assertEqual(self.metrics.value("mqtt_unroutable"), 1)
        in_thread(client.broker_lost)
        client.subscribes.clear()
        self.connect()
        self.assertEqual(client.subscribes, [])

    def test_dispatch_exact_and_wildcards(self) -> None:
        """The exact filter and each matching wildcard get the message; unmatched ones are counted."""
        client = self.started()
        self.connect()
        got: list[tuple[str, str, bytes]] = []
        for topic_filter in ("cs/CP1", "cs/+", "#", "other/#"):
            self.link.subscribe(topic_filter, 1, lambda t, p, f=topic_filter: got.append((f, t, p)))
        self.link.unsubscribe("#")
        in_thread(lambda: [client.deliver(t, b"m") for t in ("cs/CP1", "cs/CP2", "other", "x/y")])
        in_thread(client.deliver, b"cs/\xff", b"bad")
        self.reactor.pump()
        self.assertEqual(
            got,
            [
                ("cs/CP1", "cs/CP1", b"m"),
                ("cs/+", "cs/CP1", b"m"),
                ("cs/+", "cs/CP2", b"m"),
                ("other/#", "other", b"m"),
            ],
        )
        self.assertEqual(self.metrics.value("mqtt_unroutable"), 2)

    def test_refused_subscription_logged(self) -> None:
        """A SUBACK failure is logged with the filter it refers to."""
        client = self.started()
        self.connect()
        self.link.subscribe("a", 1, lambda t, p: None)
        self.link.subscribe("b", 1, lambda t, p: None)
        in_thread(client.suback, 1, [1])  # mid 1: "a" granted
        in_thread(client.suback, 2, [0x80])  # mid 2: "b" refused
        self.reactor.pump()
        self.assertEqual(self.metrics.value("mqtt_subscribe_refused"), 1)
        refused = [e for e in self.events if e.get("topic_filter") and "refused" in e["log_format"]]
        self.assertEqual([e["topic_filter"] for e in refused], ["b"])
        self.link.unsubscribe("b")  # its retry (test_refused_subscription_retried) then does nothing
        self.reactor.advance(1)

    def test_refused_subscription_retried(self) -> None:
        """A refused filter still wanted is subscribed to again after 1 s, then 2 s, 4 s ... (a broker
        may refuse for a passing reason); a granted SUBACK resets the backoff; a filter dropped
        meanwhile is not retried; stopping cancels what is pending."""
        client = self.started()
        self.connect()
        self.link.subscribe("a", 1, lambda t, p: None)
        self.link.subscribe("b", 1, lambda t, p: None)
        in_thread(client.suback, 1, [0x80])  # "a" refused
        in_thread(client.suback, 2, [0x80])  # "b" refused
        self.reactor.pump()
        self.link.unsubscribe("b")
        before = len(client.subscribes)

        def answer(code: int) -> None:  # the SUBACK of the one SUBSCRIBE awaited
            (mid,) = self.link._subscriptions.awaiting
            in_thread(client.suback, mid, [code])
            self.reactor.pump()

        self.reactor.advance(0.99)
        self.assertEqual(len(client.subscribes), before)
        self.reactor.advance(0.02)
        self.assertEqual(client.subscribes[before:], [[("a", 1)]])  # not "b"
        answer(0x80)  # refused again: the next try 2 s later
        self.reactor.advance(1.9)
        self.assertEqual(len(client.subscribes), before + 1)
        self.reactor.advance(0.2)
        self.assertEqual(len(client.subscribes), before + 2)
        answer(1)  # granted: the backoff starts again
        self.assertEqual(self.link._subscriptions.refusals, {})
        self.assertEqual(self.metrics.value("mqtt_subscribe_refused"), 3)
        self.link.subscribe("c", 1, lambda t, p: None)
        answer(0x80)
        self.link.stop(0)
        self.reactor.pump()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_invalid_filter_raises(self) -> None:
        """A malformed filter is a ValueError."""
        for topic_filter in ("", "a/b#", "a/#/b", "a+"):
            self.assertRaises(ValueError, self.link.subscribe, topic_filter, 1, lambda t, p: None)


class StopTests(_LinkTestCase):
    def test_stop_waits_for_acks_then_disconnects(self) -> None:
        """stop() disconnects only once every accepted QoS>0 message is acknowledged, then ends the thread."""
        client = self.started()
        self.connect()
        self.link.publish("t", b"1", 1)
        self.link.publish("t", b"2", 2)
        done: list[object] = []
        self.link.stop(10).addCallback(done.append)
        in_thread(client.ack, 1)
        self.reactor.pump()
        self.assertNotIn(("disconnect",), client.calls)
        self.assertTrue(self.link.publish("t", b"3", 1))  # still accepted while stopping
        in_thread(client.ack, 2)
        self.reactor.pump()
        self.assertNotIn(("disconnect",), client.calls)
        in_thread(client.ack, 3)
        self.reactor.pump()
        self.assertEqual(client.calls[-2:], [("disconnect",), ("loop_stop",)])
        self.assertEqual(done, [None])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_times_out_on_reactor_clock(self) -> None:
        """Without acks, stop() disconnects after ``timeout`` seconds of reactor time and logs the loss."""
        client = self.started()
        self.connect()
        self.link.publish("t", b"1", 1)
        done: list[object] = []
        self.link.stop(5).addCallback(done.append)
        self.reactor.advance(4.9)
        self.assertEqual(done, [])
        self.assertNotIn(("disconnect",), client.calls)
        self.reactor.advance(0.2)
        self.assertEqual(client.calls[-2:], [("disconnect",), ("loop_stop",)])
        self.assertEqual(done, [None])
        self.assertEqual(self.metrics.value("mqtt_lost_on_stop"), 1)
        self.assertTrue(any("not acknowledged" in line for line in self.logged()))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_with_nothing_outstanding_disconnects_at_once(self) -> None:
        """Nothing to wait for: disconnect at once; observers hear False; later publishes are refused."""
        states: list[bool] = []
        self.link.add_connection_observer(states.append)
        client = self.started()
        self.connect()
        done: list[object] = []
        self.link.stop(5).addCallback(done.append)
        self.assertIn(("disconnect",), client.calls)
        self.assertFalse(self.link.publish("t", b"late", 1))
        self.link.stop(5).addCallback(done.append)  # a second stop waits for the same end
        self.assertEqual(done, [])
        in_thread(client.broker_lost)  # paho reports the DISCONNECT it wrote
        self.reactor.pump()
        self.assertEqual(done, [None, None])
        self.assertEqual(states, [True, False])
        self.assertFalse(self.link.connected)
        self.assertFalse(self.link.publish("t", b"late", 1))
        second: list[object] = []
        self.link.stop(5).addCallback(second.append)
        self.assertEqual(second, [None])

    def test_stop_while_broker_down_drops_held_after_timeout(self) -> None:
        """Held messages that never found a broker are counted as lost when the stop times out."""
        client = self.started()
        self.link.publish("t", b"1", 0)
        self.link.publish("t", b"2", 1)
        done: list[object] = []
        self.link.stop(2).addCallback(done.append)
        self.reactor.advance(2)
        self.assertEqual(done, [None])
        self.assertEqual(self.metrics.value("mqtt_lost_on_stop"), 2)
        self.assertEqual(client.published, [])

    def test_stop_before_start(self) -> None:
        """stop() on a link never started fires at once and makes no client."""
        done: list[object] = []
        self.link.stop(5).addCallback(done.append)
        self.assertEqual(done, [None])
        self.assertEqual(self.clients, [])
        self.assertRaises(RuntimeError, self.link.start)
