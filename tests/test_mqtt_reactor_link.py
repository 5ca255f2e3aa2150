"""PahoReactorLink without a network: a fake paho client driven through the reactor's descriptors."""

from __future__ import annotations

import errno
import socket
from dataclasses import replace
from typing import Any

from paho.mqtt import client as mqtt
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from ocppgw.core.ports import IBrokerLink
from ocppgw.metrics import Metrics
from ocppgw.mqtt.link import PahoLink
from ocppgw.mqtt.paho_client import BufferedSocket, BufferingClient
from ocppgw.mqtt.reactor_loop import PahoReactorLink
from tests.fakes import FakePahoClient, FakeSocket
from tests.support import ThreadedMemoryReactorClock
from tests.test_mqtt_link import CONFIG


class FakeLoopClient(FakePahoClient):
    """paho's external-loop API: reconnect() opens a socket; loop_read() plays what the broker sent."""

    on_raw_message: Any = None  # as BufferingClient offers them
    on_raw_ack: Any = None
    on_raw_write: Any = None
    buffered = False  # give the link a BufferedSocket, as BufferingClient does

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_socket_open: Any = None
        self.on_socket_close: Any = None
        self.on_socket_register_write: Any = None
        self.on_socket_unregister_write: Any = None
        self.sock: Any = None
        self.refuse: BaseException | None = None
        self.reconnects = 0
        self.out: list[str] = []  # packets paho has queued
        self.written: list[str] = []
        self.incoming: list[Any] = []  # what the next loop_read does, one callable per packet
        self.reads = 0
        self.miscs = 0
        self.next_fd = 7

    def reconnect(self) -> int:
        self.reconnects += 1
        self.on_pre_connect(self, None)
        if self.refuse is not None:
            raise self.refuse
        self.sock = BufferedSocket(FakeSocket(self.next_fd)) if self.buffered else FakeSocket(self.next_fd)
        self.next_fd += 1
        self.on_socket_open(self, None, self.sock)
        self.queue("CONNECT")
        return 0

    def socket(self) -> Any:
        return self.sock

    def queue(self, packet: str) -> None:
        self.out.append(packet)
        self.on_socket_register_write(self, None, self.sock)

    def want_write(self) -> bool:
        return bool(self.out)

    def loop_write(self) -> int:
        self.written.extend(self.out)
        if "DISCONNECT" in self.out:
            self.out.clear()
            self.paho_connected = False
            self.close_socket()
            return 0
        self.out.clear()
        self.on_socket_unregister_write(self, None, self.sock)
        return 0

    def loop_read(self) -> int:
        self.reads += 1
        if self.incoming:
            self.incoming.pop(0)()
        return 0

    def loop_misc(self) -> int:
        self.miscs += 1
        return 0

    def close_socket(self) -> None:
        sock, self.sock = self.sock, None
        self.on_socket_unregister_write(self, None, sock)
        self.on_socket_close(self, None, sock)
        sock.close()

    def drops(self) -> None:
        """The broker closed the connection: paho closes its socket, then reports the disconnect."""
        self.close_socket()
        self.broker_lost()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> Any:
        info = super().publish(topic, payload, qos, retain)
        if self.paho_connected:
            self.queue(f"PUBLISH {topic}")
        return info

    def disconnect(self) -> None:
        super().disconnect()
        if self.sock is not None:
            self.queue("DISCONNECT")


class ReactorLinkTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadedMemoryReactorClock()
        self.metrics = Metrics()
        self.clients: list[FakeLoopClient] = []
        self.events: list[dict[str, Any]] = []

        def factory(**kwargs: Any) -> FakeLoopClient:
            client = FakeLoopClient(**kwargs)
            self.clients.append(client)
            return client

        self.patch(PahoLink, "_log", Logger(namespace="test", observer=self.events.append))
        self.link = PahoReactorLink(self.reactor, CONFIG, self.metrics, client_factory=factory)

    @property
    def client(self) -> FakeLoopClient:
        return self.clients[-1]

    def descriptor(self) -> Any:
        (descriptor,) = self.reactor.getReaders()
        return descriptor

    def start(self) -> FakeLoopClient:
        """Start; the pool's reconnect() result arrives with the next pump."""
        self.link.start()
        self.reactor.pump()
        return self.client

    def connack(self) -> None:
        """The broker accepts: CONNECT goes out, CONNACK comes in, inside one doRead."""
        descriptor = self.descriptor()
        if descriptor in self.reactor.getWriters():
            descriptor.doWrite()
        self.client.incoming.append(self.client.broker_connects)
        descriptor.doRead()

    def logged(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def tearDown(self) -> None:
        d = self.link.stop(0)
        for _ in range(3):
            for descriptor in self.reactor.getWriters():
                descriptor.doWrite()
            self.reactor.advance(self.link.disconnect_timeout)
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(self.reactor.getReaders(), [])


class ConnectTests(ReactorLinkTestCase):
    def test_provides_interface(self) -> None:
        """PahoReactorLink provides IBrokerLink and, by default, makes paho clients with buffered sockets."""
        self.assertTrue(verifyObject(IBrokerLink, self.link))
        factory = PahoReactorLink(self.reactor, CONFIG, self.metrics)._client_factory
        client = factory(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="x")
        self.assertIsInstance(client, BufferingClient)

    def test_connect_runs_in_pool_then_socket_registered(self) -> None:
        """start() remembers the address, connects through the thread pool and then watches the socket:
        reading always, writing while CONNECT waits; TCP_NODELAY is set on it."""
        client = self.start()
        self.assertIn(("connect_async", "broker.example", 1884, 45), client.calls)
        self.assertNotIn(("loop_start",), client.calls)
        self.assertEqual(client.reconnects, 1)
        descriptor = self.descriptor()
        self.assertIs(descriptor.sock, client.sock)
        self.assertEqual(self.reactor.getWriters(), [descriptor])
        self.assertEqual(descriptor.fileno(), 7)
        self.assertIn((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), client.sock.options)
        descriptor.doWrite()
        self.assertEqual(client.written, ["CONNECT"])
        self.assertEqual(self.reactor.getWriters(), [])

    def test_quickack_armed_after_every_read(self) -> None:
        """TCP_QUICKACK is set on the broker socket once it is registered and again after each read
        (Linux leaves quick-ACK mode by itself); with [mqtt] quickack = false, never."""
        quick = (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        client = self.start()
        self.assertEqual(client.sock.options.count(quick), 1)
        self.connack()
        client.incoming.append(lambda: client.deliver("cs/CP1", b"1"))
        self.descriptor().doRead()
        self.assertEqual(client.sock.options.count(quick), 3)

        link = PahoReactorLink(
            self.reactor, replace(CONFIG, quickack=False), self.metrics, client_factory=FakeLoopClient
        )
        link.start()
        self.reactor.pump()
        plain = link._client
        plain.incoming.append(plain.broker_connects)
        link._readable(plain.sock)
        self.assertNotIn(quick, plain.sock.options)
        link.stop(0)
        for descriptor in self.reactor.getWriters():
            descriptor.doWrite()

    def test_events_handled_inside_the_read_without_hand_off(self) -> None:
        """CONNACK and 1000 messages read in one doRead reach the link at once: no callFromThread."""
        client = self.start()
        got: list[bytes] = []
        self.link.subscribe("cs/+", 1, lambda topic, payload: got.append(payload))
        states: list[bool] = []
        self.link.add_connection_observer(states.append)
        self.connack()
        self.assertTrue(self.link.connected)
        self.assertEqual(states, [True])

        def burst() -> None:
            for n in range(1000):
                client.deliver(f"cs/CP{n}", b"%d" % n)

        client.incoming.append(burst)
        self.descriptor().doRead()
        self.assertEqual(got, [b"%d" % n for n in range(1000)])
        self.assertEqual(self.reactor.pending_from_thread, 0)

    def test_raw_messages_handled_in_the_read_and_in_order(self) -> None:
        """A message by topic bytes is handled at once inside paho's read, unless an earlier event waits:
        then it waits behind it."""
        client = self.start()
        self.connack()
        got: list[tuple[bytes, bool]] = []
        self.link.subscribe("cs/+", 1, lambda topic, payload: got.append((payload, self.link._queue.driving)))
        client.incoming.append(
            lambda: [client.deliver("cs/CP1", b"1"), client.on_raw_message(b"cs/CP2", b"2")]
        )
        self.descriptor().doRead()
        client.incoming.append(lambda: client.on_raw_message(b"cs/CP3", b"3"))
        self.descriptor().doRead()
        self.assertEqual(got, [(b"1", False), (b"2", False), (b"3", True)])

    def test_raw_messages_outside_a_paho_step_go_through_the_queue(self) -> None:
        """A message by topic bytes reported outside paho's read is handed over like any event; a topic
        that is not UTF-8 is counted and dropped."""
        client = self.start()
        self.connack()
        got: list[tuple[str, bytes]] = []
        self.link.subscribe("cs/+", 1, lambda topic, payload: got.append((topic, payload)))
        client.on_raw_message(b"cs/CP1", b"m")
        client.on_raw_message(b"cs/\xff", b"bad")
        self.assertEqual(got, [])
        self.reactor.pump()
        self.assertEqual(got, [("cs/CP1", b"m")])
        self.assertEqual(self.metrics.value("mqtt_received"), 2)
        self.assertEqual(self.metrics.value("mqtt_unroutable"), 1)

    def test_ack_by_message_id_after_refusals_reports_them(self) -> None:
        """With refusals not yet reported, an acknowledgement goes through the event queue, whose drain
        says how many were refused once there is room again."""
        client = self.start()
        self.connack()
        for n in range(6):  # max_buffered_messages is 5: the sixth is refused
            self.link.publish("t", b"%d" % n, 1)
        client.incoming.append(lambda: client.on_raw_ack(1))
        self.descriptor().doRead()
        self.assertTrue(any("refused 1 MQTT messages" in line for line in self.logged()))

    def test_ack_by_message_id_tells_room_observers(self) -> None:
        """When room() answered 0, an acknowledgement by message id goes through the event queue, whose
        drain tells the room observers."""
        client = self.start()
        self.connack()
        told: list[int] = []
        self.link.add_room_observer(lambda: told.append(self.link.room()))
        for n in range(5):
            self.link.publish("t", b"%d" % n, 1)
        self.assertEqual(self.link.room(), 0)
        client.incoming.append(lambda: client.on_raw_ack(1))
        self.descriptor().doRead()
        self.assertEqual(told, [1])

    def test_short_path_writes_flushed_once_per_turn(self) -> None:
        """What the short path buffers leaves in one send after the turn's events, with no writer
        registered; a send that would block waits for the socket to be writable."""
        self.patch(FakeLoopClient, "buffered", True)
        client = self.start()
        self.connack()
        sock = client.sock
        self.assertIsInstance(sock, BufferedSocket)
        raw = sock.sock
        for packet in (b"a", b"b"):
            sock.send(packet)
            client.on_raw_write()
        flushes = [c for c in self.reactor.getDelayedCalls() if c.func == self.link._flush_buffered]
        self.assertEqual(len(flushes), 1)
        self.assertEqual(self.reactor.getWriters(), [])
        self.reactor.advance(0)
        self.assertEqual(raw.sent, [b"ab"])
        self.assertEqual(self.reactor.getWriters(), [])
        raw.accept = [BlockingIOError(), 1]
        sock.send(b"cd")
        client.on_raw_write()
        self.reactor.advance(0)
        self.assertEqual(self.reactor.getWriters(), [self.descriptor()])
        self.descriptor().doWrite()
        self.assertEqual(raw.sent, [b"ab", b"c"])  # the kernel took one byte: still waiting
        self.descriptor().doWrite()
        self.assertEqual(raw.sent, [b"ab", b"c", b"d"])
        self.assertEqual(self.reactor.getWriters(), [])

    def test_pending_flush_dropped_with_the_socket(self) -> None:
        self.patch(FakeLoopClient, "buffered", True)
        client = self.start()
        self.connack()
        client.sock.send(b"x")
        client.on_raw_write()
        client.incoming.append(client.drops)
        self.descriptor().doRead()
        self.assertEqual(
            [c for c in self.reactor.getDelayedCalls() if c.func == self.link._flush_buffered], []
        )

    def test_flood_read_in_one_turn_with_acks_between(self) -> None:
        """Under a flood from the broker (issue 9, item 14) one readable event reads chunk after chunk
        until the socket would block, at most max_reads, and sends what each chunk asked for (its
        PUBACKs) before reading the next, so the broker's window for the session reopens at once."""
        self.patch(FakeLoopClient, "buffered", True)
        client = self.start()
        self.connack()
        raw = client.sock.sock
        raw.sent.clear()
        chunks = self.link.max_reads + 4
        raw.chunks = [b"%d" % n for n in range(chunks)]
        sent_before_read: list[int] = []

        def read_one(n: int) -> None:
            sent_before_read.append(len(raw.sent))
            try:
                client.sock.recv(65536)
            except BlockingIOError:
                return
            client.sock.send(b"ack%d" % n)  # what paho packs into the buffered socket: a PUBACK

        client.incoming.extend(lambda n=n: read_one(n) for n in range(chunks + 1))
        client.reads = 0
        self.descriptor().doRead()
        self.assertEqual(client.reads, self.link.max_reads)
        self.assertEqual(len(raw.chunks), 4)  # the rest waits for the next turn
        self.assertEqual(sent_before_read[:3], [0, 1, 2])  # each chunk's ack went out before the next read
        self.descriptor().doRead()
        self.assertEqual(raw.chunks, [])
        self.assertEqual(client.reads, self.link.max_reads + 5)  # four chunks, then the read that blocks

    def test_acks_by_message_id(self) -> None:
        """Acknowledgements by message id count at once inside the read; while stopping they still let
        the stop go on to DISCONNECT."""
        client = self.start()
        self.connack()
        for n in range(3):
            self.link.publish("t", b"%d" % n, 1)
        client.incoming.append(lambda: client.on_raw_ack(1))
        self.descriptor().doRead()
        self.assertEqual(self.metrics.value("mqtt_outstanding"), 2)
        self.assertEqual(self.reactor.pending_from_thread, 0)
        self.link.stop(10)
        client.incoming.append(lambda: [client.on_raw_ack(2), client.on_raw_ack(3)])
        self.descriptor().doRead()
        self.assertEqual(self.metrics.value("mqtt_outstanding"), 0)
        self.assertIn("DISCONNECT", client.out)

    def test_publish_registers_writer_until_written(self) -> None:
        """A publish only queues in paho; the writer is registered until doWrite has written it."""
        client = self.start()
        self.connack()
        self.assertTrue(self.link.publish("cp/CP1", b"x", 1))
        self.assertEqual(self.reactor.getWriters(), [self.descriptor()])
        self.descriptor().doWrite()
        self.assertEqual(client.written[-1], "PUBLISH cp/CP1")
        self.assertEqual(self.reactor.getWriters(), [])

    def retry_delay(self) -> float:
        (call,) = [c for c in self.reactor.getDelayedCalls() if c.func == self.link._connect]
        return call.getTime() - self.reactor.seconds()

    def test_refused_connects_back_off_doubling_to_the_maximum(self) -> None:
        """After a loss, attempts wait 0.25, 0.5, 1, 2, 4, 8, 8 s (min 0.25 s, doubled, max 8 s) on the
        reactor's clock; each failure is counted, the first one logged."""
        client = self.start()
        self.connack()
        client.refuse = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        client.drops()
        delays = []
        for _ in range(7):
            delays.append(self.retry_delay())
            self.reactor.advance(delays[-1])
        self.assertEqual(delays, [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0])
        self.assertEqual(client.reconnects, 8)
        self.assertEqual(self.metrics.value("mqtt_connect_attempts"), 8)
        self.assertEqual(self.metrics.value("mqtt_connect_failures"), 7)
        (line,) = [line for line in self.logged() if "cannot reach MQTT broker" in line]
        self.assertIn("broker.example:1884 ([Errno 111] refused); retrying every 0.25s to 8.0s", line)

    def test_connack_resets_back_off(self) -> None:
        """A CONNACK resets the back-off: the next loss waits reconnect_delay_min again."""
        client = self.start()
        self.connack()
        client.refuse = OSError("down")
        client.drops()
        self.reactor.advance(0.25)  # fails
        self.assertEqual(self.retry_delay(), 0.5)
        client.refuse = None
        self.reactor.advance(0.5)
        self.connack()
        client.drops()
        self.assertEqual(self.retry_delay(), 0.25)

    def test_lost_connection_unregisters_before_close_and_resubscribes(self) -> None:
        """When paho closes its socket the reactor stops watching it first; after the retry delay a new
        socket is registered, the subscriptions are sent again and held messages follow in order."""
        client = self.start()
        self.link.subscribe("cs/+", 1, lambda topic, payload: None)
        self.connack()
        old = self.descriptor()
        client.incoming.append(client.drops)
        old.doRead()
        self.assertEqual(self.reactor.getReaders(), [])
        self.assertFalse(self.link.connected)
        self.assertTrue(self.link.publish("cp/held", b"1", 1))
        self.reactor.advance(0.25)
        self.assertEqual(client.reconnects, 2)
        new = self.descriptor()
        self.assertIsNot(new, old)
        self.assertEqual(new.fileno(), 8)
        old.doRead()  # a stale event for the old socket does nothing
        self.connack()
        self.assertEqual(client.subscribes[-1], [("cs/+", 1)])
        self.assertEqual(client.published, [("cp/held", b"1", 1, False)])

    def test_misc_runs_every_second_while_a_socket_is_open(self) -> None:
        """loop_misc (keepalive) runs once a second on the reactor's clock, and not without a socket."""
        client = self.start()
        self.reactor.advance(1)
        self.reactor.advance(1)
        self.assertEqual(client.miscs, 2)
        client.drops()
        client.refuse = OSError("down")
        self.reactor.advance(0.5)
        self.reactor.advance(0.5)
        self.assertEqual(client.miscs, 2)

    def test_tls_bytes_pending_are_read_in_the_same_turn(self) -> None:
        """Bytes TLS already decrypted are invisible to epoll: loop_read is called until none remain."""
        client = self.start()
        self.connack()
        client.sock.tls_pending = 3

        def consume() -> None:
            client.sock.tls_pending -= 1

        reads = client.reads
        client.incoming.extend([consume, consume, consume])
        self.descriptor().doRead()
        self.assertEqual(client.reads - reads, 3)

    def test_paho_exception_logged_and_link_goes_on(self) -> None:
        """An exception escaping paho is logged; the descriptor never raises into the reactor."""
        self.start()
        self.connack()

        def broken() -> None:
            raise RuntimeError("paho bug")

        self.client.incoming.append(broken)
        self.descriptor().doRead()
        self.assertTrue(any("paho failed in loop_read" in line for line in self.logged()))
        self.assertTrue(self.link.connected)


class StopTests(ReactorLinkTestCase):
    def test_stop_writes_disconnect_then_fires(self) -> None:
        """stop() queues DISCONNECT; once paho has written it and closed, the Deferred fires and nothing
        of the link is left in the reactor."""
        client = self.start()
        self.connack()
        d = self.link.stop(5)
        self.assertNoResult(d)
        self.descriptor().doWrite()
        self.assertEqual(client.written[-1], "DISCONNECT")
        self.assertEqual(self.reactor.getReaders(), [])
        self.reactor.advance(0)
        self.successResultOf(d)
        self.assertFalse(self.link.connected)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_while_broker_down_cancels_the_retry(self) -> None:
        """With no socket and a retry pending, stop() fires at once and the retry never runs."""
        client = self.start()
        client.refuse = OSError("down")
        client.drops()
        d = self.link.stop(5)
        self.reactor.advance(0)
        self.successResultOf(d)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(client.reconnects, 1)

    def test_stop_while_connecting_says_goodbye_after_connect(self) -> None:
        """stop() during a connect in the pool waits for it, then sends DISCONNECT after CONNECT."""
        self.link.start()  # reconnect() result not pumped yet
        d = self.link.stop(5)
        self.reactor.pump()
        client = self.client
        self.assertEqual(client.out, ["CONNECT", "DISCONNECT"])
        self.descriptor().doWrite()
        self.reactor.advance(0)
        self.successResultOf(d)

    def test_disconnect_not_written_in_time_closes_the_socket(self) -> None:
        """A broker that reads nothing: after disconnect_timeout the link closes paho's socket itself."""
        client = self.start()
        self.connack()
        sock = client.sock
        d = self.link.stop(5)
        self.reactor.advance(self.link.disconnect_timeout)
        self.successResultOf(d)
        self.assertTrue(sock.closed)
        self.assertEqual(self.reactor.getReaders(), [])
        self.assertTrue(any("did not take DISCONNECT" in line for line in self.logged()))
