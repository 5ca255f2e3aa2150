"""The buffered socket and the short path of ``BufferingClient``, against paho's own reads."""

from __future__ import annotations

import errno
import ssl
import struct
from typing import Any

from paho.mqtt import client as mqtt
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.mqtt.paho_client import (
    OVERRIDDEN,
    PRIVATE_MEMBERS,
    BufferedSocket,
    BufferingClient,
    remaining_length,
    resending,
)
from tests.fakes import FakeSocket


class BufferedSocketTests(SynchronousTestCase):
    def test_reads_served_from_one_recv(self) -> None:
        """paho's small reads come from one large recv; EAGAIN passes through once the chunk is used."""
        sock = FakeSocket()
        sock.chunks = [b"\x30\x05hello"]
        buffered = BufferedSocket(sock)
        self.assertEqual(buffered.recv(1), b"\x30")
        self.assertEqual(buffered.pending(), 6)
        self.assertEqual(buffered.recv(1), b"\x05")
        self.assertEqual(buffered.recv(10), b"hello")
        self.assertEqual(buffered.pending(), 0)
        self.assertRaises(BlockingIOError, buffered.recv, 1)

    def test_end_of_stream_passes_through(self) -> None:
        sock = FakeSocket()
        sock.chunks = [b""]
        self.assertEqual(BufferedSocket(sock).recv(1), b"")

    def test_writes_gathered_into_one_send(self) -> None:
        """Everything paho sends in one step leaves in one send() at flush."""
        sock = FakeSocket()
        buffered = BufferedSocket(sock)
        self.assertEqual(buffered.send(b"ab"), 2)
        self.assertEqual(buffered.send(bytearray(b"cd")), 2)
        self.assertEqual(sock.sent, [])
        self.assertTrue(buffered.flush())
        self.assertEqual(sock.sent, [b"abcd"])
        self.assertFalse(buffered.has_output)

    def test_partial_and_blocked_writes_keep_the_rest(self) -> None:
        """A short write keeps the rest; after a would-block the same bytes are offered again alone
        (TLS requires that), and what came later follows."""
        sock = FakeSocket()
        sock.accept = [1, ssl.SSLWantWriteError(), 5]
        buffered = BufferedSocket(sock)
        buffered.send(b"abcd")
        self.assertFalse(buffered.flush())  # wrote "a"
        buffered.send(b"ef")
        self.assertFalse(buffered.flush())  # blocked on "bcdef"
        buffered.send(b"gh")
        self.assertTrue(buffered.flush())  # "bcdef" alone, then "gh"
        self.assertEqual(sock.sent, [b"a", b"bcdef", b"gh"])

    def test_write_error_reported_by_the_next_read(self) -> None:
        """A failed write drops the output; paho learns of it from its next read that needs the socket."""
        sock = FakeSocket()
        sock.accept = [BrokenPipeError(errno.EPIPE, "broken pipe")]
        sock.chunks = [b"\x20\x02"]
        buffered = BufferedSocket(sock)
        self.assertEqual(buffered.recv(1), b"\x20")
        buffered.send(b"x")
        self.assertTrue(buffered.flush())
        self.assertFalse(buffered.has_output)
        self.assertIsInstance(buffered.error, BrokenPipeError)
        self.assertEqual(buffered.recv(1), b"\x02")  # what was already read is still served
        self.assertRaises(BrokenPipeError, buffered.recv, 1)

    def test_close_flushes_first(self) -> None:
        """DISCONNECT, written just before paho closes, still leaves."""
        sock = FakeSocket()
        buffered = BufferedSocket(sock)
        buffered.send(b"\xe0\x00")
        buffered.close()
        self.assertEqual(sock.sent, [b"\xe0\x00"])
        self.assertTrue(sock.closed)

    def test_other_attributes_are_the_socket_s(self) -> None:
        sock = FakeSocket(fd=11)
        self.assertEqual(BufferedSocket(sock).fileno(), 11)

    def test_take_packet_only_whole_packets_of_the_kinds_asked(self) -> None:
        sock = FakeSocket()
        sock.chunks = [b"\x40\x02\x00\x07" + b"\x90\x03\x00\x01\x00" + b"\x40\x02\x00"]
        buffered = BufferedSocket(sock)
        buffered.recv(0)  # fills the buffer
        self.assertEqual(buffered.take_packet(frozenset({0x40})), (0x40, b"\x00\x07"))
        self.assertIsNone(buffered.take_packet(frozenset({0x40})))  # a SUBACK is next
        self.assertEqual(buffered.recv(5), b"\x90\x03\x00\x01\x00")
        self.assertIsNone(buffered.take_packet(frozenset({0x40})))  # one byte of the body is missing
        self.assertEqual(buffered.pending(), 3)

    def test_take_packet_multi_byte_length(self) -> None:
        body = b"x" * 300
        sock = FakeSocket()
        sock.chunks = [b"\x30\xac\x02" + body]
        buffered = BufferedSocket(sock)
        buffered.recv(0)
        self.assertEqual(buffered.take_packet(frozenset({0x30})), (0x30, body))

    def test_take_packet_leaves_a_malformed_length_alone(self) -> None:
        """Five length bytes: paho reads them itself and reports the protocol error."""
        sock = FakeSocket()
        sock.chunks = [b"\x30\xff\xff\xff\xff\x01" + b"x" * 16]
        buffered = BufferedSocket(sock)
        buffered.recv(0)
        self.assertIsNone(buffered.take_packet(frozenset({0x30})))
        self.assertEqual(buffered.pending(), 22)


def publish(
    topic: bytes, payload: bytes, qos: int = 1, mid: int = 1, dup: bool = False, retain: bool = False
) -> bytes:
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"") + payload
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    return bytes([first]) + remaining_length(len(body)) + body


def puback(mid: int) -> bytes:
    return b"\x40\x02" + struct.pack("!H", mid)


class _Run:
    """One paho client, connected in memory, that has published QoS 1 messages with mids 1..3."""

    def __init__(self, client_class: type[mqtt.Client], short_path: bool = True) -> None:
        self.events: list[tuple[Any, ...]] = []
        client = client_class(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="t", protocol=mqtt.MQTTv311
        )
        if isinstance(client, BufferingClient):
            client.short_path = short_path
        client.on_message = lambda c, u, m: self.events.append(
            ("message", m._topic, bytes(m.payload), m.qos, m.retain, m.dup, m.mid)
        )
        client.on_publish = lambda c, u, mid, reason, props: self.events.append(
            ("published", mid, reason.value, reason.is_failure, props.json())
        )
        client.on_socket_register_write = lambda *_: None
        client.on_socket_unregister_write = lambda *_: None
        client.max_inflight_messages_set(0)  # as the link sets it
        self.raw = FakeSocket()
        self.sock = BufferedSocket(self.raw)
        client._sock = self.sock
        client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
        for n in range(3):
            client.publish(f"up/{n}", b"m%d" % n, 1)
        client.loop_write()
        self.sock.flush()
        self.raw.sent.clear()
        self.client = client

    def read(self, *chunks: bytes) -> list[Any]:
        """Feed ``chunks`` as successive recv results; returns every _packet_read outcome until
        paho would block or stops reading."""
        self.raw.chunks = list(chunks)
        outcomes = []
        while True:
            rc = self.client._packet_read()
            outcomes.append(rc)
            if rc != mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        self.client.loop_write()
        self.sock.flush()
        return outcomes

    @property
    def written(self) -> bytes:
        return b"".join(self.raw.sent)


class ShortPathTests(SynchronousTestCase):
    """Every stream gives the same callbacks, outcomes and bytes written with and without the short
    path; the cases the short path takes are checked to leave paho's own decoding unused."""

    def assertSameAsPaho(self, *chunks: bytes) -> _Run:
        stock = _Run(mqtt.Client)
        expected = stock.read(*chunks)
        short = _Run(BufferingClient)
        self.assertEqual(short.read(*chunks), expected)
        self.assertEqual(short.events, stock.events)
        self.assertEqual(short.written, stock.written)
        self.assertEqual(short.client._out_messages.keys(), stock.client._out_messages.keys())
        self.assertEqual(short.client._inflight_messages, stock.client._inflight_messages)
        return short

    def test_installed_paho_has_what_the_short_path_needs(self) -> None:
        """A paho release that renamed one of these would silently lose the short path."""
        client = BufferingClient(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311
        )
        self.assertEqual([name for name in PRIVATE_MEMBERS if not hasattr(client, name)], [])
        self.assertEqual([name for name in OVERRIDDEN if name not in vars(mqtt.Client)], [])
        self.assertTrue(client.short_path)

    def test_resending_reads_what_paho_kept(self) -> None:
        """QoS 1 accepted without a connection is kept for the re-send after CONNACK: resending until
        paho has written it (then it only awaits PUBACK); QoS 0 and plain fakes never count."""
        client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.publish("t", b"x", 0)
        self.assertFalse(resending(client))
        client.publish("t", b"x", 1)
        self.assertTrue(resending(client))
        self.assertFalse(resending(_Run(mqtt.Client).client))  # written: awaiting PUBACK
        self.assertFalse(resending(object()))

    def test_a_paho_without_them_gets_paho_s_path(self) -> None:
        for target, name in ((mqtt, "mqtt_ms_wait_for_puback"), (mqtt.MQTTMessageInfo, "_set_as_published")):
            with self.subTest(name=name):
                saved = getattr(target, name)
                delattr(target, name)
                try:
                    client = BufferingClient(
                        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311
                    )
                finally:
                    setattr(target, name, saved)
                self.assertFalse(client.short_path)

    def test_pubacks_and_publishes(self) -> None:
        run = self.assertSameAsPaho(
            puback(2)
            + publish(b"down/CP1", b'{"a":1}', qos=1, mid=9)
            + puback(1)
            + publish(b"down/CP2", b"", qos=0)
            + publish(b"down/CP3", b"r", qos=1, mid=65535, dup=True, retain=True)
            + puback(77)  # not ours: ignored
            + publish(b"down/CP4", b"q0r", qos=0, retain=True)
        )
        self.assertEqual([e[0] for e in run.events].count("message"), 4)
        self.assertEqual([e[1] for e in run.events if e[0] == "published"], [2, 1])
        self.assertEqual(run.written, puback(9) + puback(65535))

    def test_raw_message_sink(self) -> None:
        """With ``on_raw_message`` set, messages go there as bytes, on_message is not called, and
        QoS 1 is acknowledged as before."""
        stream = publish(b"down/CP1", b"one", qos=1, mid=9) + publish(b"down/\xff", b"two", qos=0) + puback(1)
        stock = _Run(mqtt.Client)
        stock.read(stream)
        run = _Run(BufferingClient)
        raw: list[tuple[bytes, bytes]] = []
        run.client.on_raw_message = lambda topic, payload: raw.append((topic, payload))
        run.read(stream)
        self.assertEqual(raw, [(b"down/CP1", b"one"), (b"down/\xff", b"two")])
        self.assertEqual([e[0] for e in run.events], ["published"])
        self.assertEqual(run.written, stock.written)
        self.assertEqual(run.written, puback(9))

    def test_the_short_path_is_taken(self) -> None:
        """paho's own decoders are never reached for PUBACK and QoS 0/1 PUBLISH."""
        run = _Run(BufferingClient)

        def refuse(*args: Any) -> Any:
            raise AssertionError("paho's own decoding was used")

        run.client._handle_pubackcomp = refuse
        run.client._handle_publish = refuse
        run.read(puback(1) + publish(b"t", b"p", qos=1, mid=4) + publish(b"t", b"p", qos=0))
        self.assertEqual(len(run.events), 3)

    def test_without_the_short_path_paho_reads_everything(self) -> None:
        run = _Run(BufferingClient, short_path=False)
        decoded: list[str] = []
        original = run.client._handle_pubackcomp
        run.client._handle_pubackcomp = lambda cmd: decoded.append(cmd) or original(cmd)
        run.read(puback(1))
        self.assertEqual(decoded, ["PUBACK"])

    def test_packets_split_across_reads(self) -> None:
        stream = puback(1) + publish(b"down/CP1", b"x" * 200, mid=5) + puback(2) + publish(b"t", b"y", mid=6)
        for cut in (1, 3, 5, 40, len(stream) - 2):
            with self.subTest(cut=cut):
                self.assertSameAsPaho(stream[:cut], stream[cut:])
        self.assertSameAsPaho(*[stream[i : i + 1] for i in range(len(stream))])

    def test_other_packets_mixed_in(self) -> None:
        """QoS 2 PUBLISH (PUBREC), SUBACK, PINGRESP, PUBACK with flags: paho's path, in order."""
        self.assertSameAsPaho(
            publish(b"q2", b"two", qos=2, mid=8)
            + puback(3)
            + b"\x90\x03\x00\x05\x01"
            + b"\xd0\x00"
            + b"\x42\x02\x00\x01"
            + publish(b"after", b"z", qos=1, mid=10)
        )

    def test_large_publish(self) -> None:
        self.assertSameAsPaho(publish(b"big", b"b" * 70000, mid=11), puback(1))

    def test_malformed_packets(self) -> None:
        cases = {
            "puback too long": b"\x40\x03\x00\x01\x00",
            "puback too short": b"\x40\x01\x00",
            "publish shorter than its topic length": b"\x32\x04\x00\x09ab",
            "publish without a message id": b"\x32\x03\x00\x01a",
            "publish with half a message id": b"\x32\x04\x00\x01a\x00",
            "qos 0 publish shorter than its topic": b"\x30\x02\x00\x01",
            "publish with one byte": b"\x30\x01\x00",
            "empty topic": b"\x32\x04\x00\x00\x00\x01",
            "qos 3": b"\x36\x05\x00\x01a\x00\x01",
        }
        for name, packet in cases.items():
            with self.subTest(name):
                run = self.assertSameAsPaho(puback(1) + packet + puback(2))
                self.assertEqual(run.events[-1][:2], ("published", 1))  # nothing after the bad packet

    def test_end_of_stream_and_socket_errors(self) -> None:
        self.assertSameAsPaho(puback(1), b"")
        stock, short = _Run(mqtt.Client), _Run(BufferingClient)
        for run in (stock, short):
            run.raw.chunks = []
            run.raw.recv = lambda size: (_ for _ in ()).throw(ConnectionResetError(errno.ECONNRESET, "reset"))
        self.assertEqual(short.client._packet_read(), stock.client._packet_read())
        self.assertEqual(short.client._packet_read(), mqtt.MQTTErrorCode.MQTT_ERR_CONN_LOST)

    def test_tls_wants(self) -> None:
        """SSLWantRead: try again later; SSLWantWrite: also ask to be told when writable, as paho does."""
        for error, registers in ((ssl.SSLWantReadError(), False), (ssl.SSLWantWriteError(), True)):
            with self.subTest(error=type(error).__name__):
                run = _Run(BufferingClient)
                asked: list[bool] = []
                run.client.on_socket_register_write = lambda *_, asked=asked: asked.append(True)
                run.client._registered_write = False

                def want(size: int, error: Exception = error) -> bytes:
                    raise error

                run.raw.recv = want
                self.assertEqual(run.client._packet_read(), mqtt.MQTTErrorCode.MQTT_ERR_AGAIN)
                self.assertEqual(bool(asked), registers)

    def test_mqtt5_uses_paho_s_path(self) -> None:
        client = BufferingClient(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        decoded: list[str] = []
        client._handle_pubackcomp = lambda cmd: decoded.append(cmd) or mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        raw = FakeSocket()
        raw.chunks = [puback(1)]
        client._sock = BufferedSocket(raw)
        client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
        client._packet_read()
        self.assertEqual(decoded, ["PUBACK"])

    def test_last_bytes_received_is_updated(self) -> None:
        """paho's keepalive check counts any packet read as sign of life."""
        run = _Run(BufferingClient)
        run.client._last_bytes_received = 0.0
        run.read(puback(1))
        self.assertGreater(run.client._last_bytes_received, 0.0)


class ShortPublishTests(SynchronousTestCase):
    """QoS 1 publishes packed by ``BufferingClient`` leave the same bytes and paho state as paho's own."""

    def fresh(self, client_class: type[mqtt.Client]) -> _Run:
        run = _Run(client_class)
        run.client._out_messages.clear()
        run.client._inflight_messages = 0
        return run

    def publish_all(self, run: _Run) -> list[tuple[int, int]]:
        outcomes = []
        for topic, payload, qos, retain in [
            ("up/CP1", b'{"a":1}', 1, False),
            ("up/CP2", b"r", 1, True),
            ("up/CP3", b"x" * 200, 1, False),
            ("up/\u00e9", b"y" * 70000, 1, False),
            ("up/q0", b"zero", 0, False),
            ("up/q2", b"two", 2, False),
            ("up/ba", bytearray(b"array"), 1, False),
            ("up/str", "text", 1, False),
            ("up/none", None, 1, False),
        ]:
            info = run.client.publish(topic, payload, qos, retain)
            outcomes.append((info.rc, info.mid))
            run.client.loop_write()
            run.sock.flush()
        return outcomes

    def test_same_bytes_and_state_as_paho(self) -> None:
        stock, short = self.fresh(mqtt.Client), self.fresh(BufferingClient)
        self.assertEqual(self.publish_all(short), self.publish_all(stock))
        self.assertEqual(short.written, stock.written)
        for name in ("_inflight_messages", "_last_mid"):
            self.assertEqual(getattr(short.client, name), getattr(stock.client, name))
        self.assertEqual(
            [
                (m.mid, m.topic, bytes(m.payload), m.qos, m.retain, m.dup, m.state)
                for m in short.client._out_messages.values()
            ],
            [
                (m.mid, m.topic, bytes(m.payload), m.qos, m.retain, m.dup, m.state)
                for m in stock.client._out_messages.values()
            ],
        )
        # and the PUBACKs settle both alike
        acks = b"".join(puback(mid) for mid in list(stock.client._out_messages))
        self.assertEqual(short.read(acks), stock.read(acks))
        self.assertEqual(short.events, stock.events)
        self.assertEqual(len(short.client._out_messages), 0)

    def test_qos1_bytes_skip_paho_s_queue(self) -> None:
        run = self.fresh(BufferingClient)

        def refuse(*args: Any) -> Any:
            raise AssertionError("paho's own publish path was used")

        run.client._send_publish = refuse
        info = run.client.publish("up/CP1", b"p", 1)
        self.assertEqual(info.rc, mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS)
        self.assertFalse(run.client.want_write())
        self.assertTrue(run.sock.has_output)

    def test_raw_write_hook(self) -> None:
        """With ``on_raw_write`` set, each packet the short path buffers calls it, not paho's
        register-write callback."""
        run = self.fresh(BufferingClient)
        hooked: list[bool] = []
        registered: list[bool] = []
        run.client.on_raw_write = lambda: hooked.append(True)
        run.client.on_socket_register_write = lambda *_: registered.append(True)
        run.client._registered_write = False
        run.client.publish("up/CP1", b"p", 1)
        run.raw.chunks = [publish(b"down/CP1", b"d", qos=1, mid=7)]
        run.client._packet_read()
        self.assertEqual((hooked, registered), ([True, True], []))

    def test_publish_counts_as_sending_for_keepalive(self) -> None:
        """paho pings only after keepalive seconds without sending; a packed publish is a send."""
        run = self.fresh(BufferingClient)
        run.client._last_msg_out = 0.0
        run.client.publish("up/CP1", b"p", 1)
        self.assertGreater(run.client._last_msg_out, 0.0)

    def test_queued_packets_go_first(self) -> None:
        """With a packet still in paho's queue (a SUBSCRIBE here), a PUBACK and a publish queue behind
        it: the order on the wire holds."""
        run = self.fresh(BufferingClient)
        run.client.subscribe("down/#", 1)
        self.assertTrue(run.client.want_write())
        run.raw.chunks = [publish(b"down/CP1", b"d", qos=1, mid=7)]
        run.client._packet_read()
        info = run.client.publish("up/CP1", b"p", 1)
        run.client.loop_write()
        run.sock.flush()
        subscribe = b"\x82\x0b" + struct.pack("!H", info.mid - 1) + b"\x00\x06down/#\x01"
        self.assertEqual(run.written, subscribe + puback(7) + publish(b"up/CP1", b"p", qos=1, mid=info.mid))

    def test_puback_straight_to_the_socket(self) -> None:
        run = self.fresh(BufferingClient)
        run.client._send_puback = lambda mid: self.fail("paho's own PUBACK path was used")
        run.raw.chunks = [publish(b"down/CP1", b"d", qos=1, mid=7)]
        run.client._packet_read()
        self.assertFalse(run.client.want_write())
        run.sock.flush()
        self.assertEqual(run.written, puback(7))

    def test_not_connected_is_paho_s_answer(self) -> None:
        stock, short = self.fresh(mqtt.Client), self.fresh(BufferingClient)
        for run in (stock, short):
            run.client._state = mqtt._ConnectionState.MQTT_CS_CONNECTION_LOST
        self.assertEqual(self.publish_all(short), self.publish_all(stock))
        self.assertEqual(short.written, stock.written)
        self.assertEqual(list(short.client._out_messages), list(stock.client._out_messages))

    def test_in_flight_limit_is_paho_s(self) -> None:
        """With paho's in-flight limit set, publishes and acknowledgements are paho's own."""
        stock, short = self.fresh(mqtt.Client), self.fresh(BufferingClient)
        acked: list[int] = []
        short.client.on_raw_ack = acked.append
        for run in (stock, short):
            run.client._max_inflight_messages = 2
        self.assertEqual(self.publish_all(short), self.publish_all(stock))
        self.assertEqual(short.written, stock.written)
        self.assertEqual(short.read(puback(1) + puback(2)), stock.read(puback(1) + puback(2)))
        self.assertEqual(short.events, stock.events)
        self.assertEqual(short.written, stock.written)  # the next queued ones went out after the acks
        self.assertEqual(acked, [])

    def test_raw_ack(self) -> None:
        """``on_raw_ack`` hears of each acknowledged message; paho's bookkeeping is done as on_publish's."""
        run = self.fresh(BufferingClient)
        acked: list[int] = []
        run.client.on_raw_ack = acked.append
        infos = [run.client.publish(f"up/{n}", b"p", 1) for n in range(3)]
        run.read(puback(infos[1].mid) + puback(999))
        self.assertEqual(acked, [infos[1].mid])
        self.assertEqual(run.events, [])  # no on_publish
        self.assertTrue(infos[1].is_published())
        self.assertFalse(infos[0].is_published())
        self.assertEqual(list(run.client._out_messages), [infos[0].mid, infos[2].mid])
        self.assertEqual(run.client._inflight_messages, 2)
