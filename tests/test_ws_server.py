"""OcppServerProtocol over a StringTransport: handshake answers, framing, activity, closing, and
send_text/close that never raise."""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
from collections import deque
from typing import Any

import txaio
from autobahn.twisted import websocket as autobahn_twisted
from autobahn.twisted.websocket import WebSocketAdapterProtocol, WebSocketServerProtocol
from autobahn.websocket import protocol as autobahn_protocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from txaio.testutil import replace_loop

from ocppgw.auth import AllowAll
from ocppgw.config import config_from_string
from ocppgw.core.router import Router
from ocppgw.metrics import Metrics
from ocppgw.ws.lean import FACTORY_SETTINGS, NO_QUEUE
from ocppgw.ws.server import OcppServerFactory, OcppServerProtocol
from tests.fakes import FakeMqttLink

txaio.use_twisted()


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked, final client frame, as RFC 6455 requires from clients."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class _Transport(StringTransport):
    """A StringTransport that, like a real TCP transport, lets Autobahn unregister a producer it never set."""

    def unregisterProducer(self) -> None:
        self.producer = None


def upgrade_request(path: str, protocols: str | None = "ocpp1.6", extra: str = "") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1:33033",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version: 13",
    ]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def open_protocol(
    factory: OcppServerFactory, clock: Clock, chunks: list[bytes], host: str = "10.1.2.3"
) -> tuple[Any, _Transport]:
    """A protocol of ``factory`` connected from ``host`` over a _Transport, fed ``chunks``."""
    with replace_loop(clock):
        protocol = factory.buildProtocol(IPv4Address("TCP", host, 5555))
        transport = _Transport(peerAddress=IPv4Address("TCP", host, 5555))
        protocol.makeConnection(transport)
        for chunk in chunks:
            protocol.dataReceived(chunk)
    return protocol, transport


class ServerTestCase(SynchronousTestCase):
    """A router on a fake broker link and a listener's factory, on a Clock; ``connect`` opens a protocol."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.link = FakeMqttLink(connected=True)
        config = config_from_string(
            "[gateway]\ndefault_heartbeat_interval = 60s\nping_interval = 0\n"
            "[listeners.ws.default]\nbind = 33033\n"
        )
        self.metrics = Metrics()
        self.router = Router(config, self.link, self.clock, self.metrics)
        with replace_loop(self.clock):
            self.factory = OcppServerFactory(
                self.router, AllowAll(), config.listeners[0], config.gateway, self.metrics, self.clock
            )

    def connect(self, request: bytes, byte_by_byte: bool = False) -> tuple[Any, _Transport]:
        chunks = [request[i : i + 1] for i in range(len(request))] if byte_by_byte else [request]
        return open_protocol(self.factory, self.clock, chunks)

    def tearDown(self) -> None:
        for call in self.clock.getDelayedCalls():
            call.cancel()


class ProtocolTests(ServerTestCase):
    """Handshake answers, framing, activity and closing."""

    def test_handshake_accepts_ocpp16(self) -> None:
        """The 101 answer names ocpp1.6; the charge point is attached with its peer address."""
        protocol, transport = self.connect(upgrade_request("/ocpp/CP%201"))
        response = transport.value().decode("latin-1")
        self.assertTrue(response.startswith("HTTP/1.1 101"), response)
        self.assertIn("Sec-WebSocket-Protocol: ocpp1.6", response)
        self.assertIsNotNone(self.router.session("CP 1"))
        self.assertEqual(protocol.peer_address, "10.1.2.3:5555")
        self.assertEqual(self.link.subscriptions["ocpp/cs/CP 1"][0], 1)

    def test_factory_settings_copied_without_formatting(self) -> None:
        """Every protocol setting Autobahn takes from the factory reaches the protocol, and nothing is
        pretty-printed per connection (Autobahn's _connectionMade formats what CONFIG_ATTRS lists for
        a debug line, debug on or not: if it starts formatting something else, this test names it)."""
        self.factory.setProtocolOptions(autoPingInterval=7, maxMessagePayloadSize=1234)
        formatted: list[object] = []
        real = autobahn_protocol.pformat
        self.patch(autobahn_protocol, "pformat", lambda obj: formatted.append(obj) or real(obj))
        protocol, _ = self.connect(upgrade_request("/ocpp/CP1"))
        self.assertEqual(OcppServerProtocol.CONFIG_ATTRS, ())
        self.assertEqual(FACTORY_SETTINGS, tuple(WebSocketServerProtocol.CONFIG_ATTRS))
        for name in FACTORY_SETTINGS:
            self.assertEqual(getattr(protocol, name), getattr(self.factory, name), name)
        self.assertEqual((protocol.autoPingInterval, protocol.maxMessagePayloadSize), (7, 1234))
        self.assertEqual(formatted, [[]])

    def test_reads_and_writes_format_no_debug_arguments(self) -> None:
        """Autobahn's dataReceived and unqueued sendData build colored debug arguments (hltype, hlval)
        on every call, debug on or not; LeanServerProtocol calls what they wrap instead. If Autobahn
        makes either do more than log around ``_dataReceived`` / ``transport.write``, the name sets
        below change and this test names them."""
        callers: list[str] = []
        real = autobahn_protocol.hltype

        def hltype(obj: object) -> str:
            callers.append(sys._getframe(1).f_code.co_name)
            return real(obj)

        self.patch(autobahn_protocol, "hltype", hltype)
        self.patch(autobahn_twisted, "hltype", hltype)
        protocol, transport = self.connect(upgrade_request("/ocpp/CP1"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101"))
        self.assertEqual(protocol.trafficStats.preopenOutgoingOctetsWireLevel, len(transport.value()))
        self.assertNotIn("dataReceived", callers)
        self.assertNotIn("sendData", callers)
        self.assertEqual(
            set(WebSocketAdapterProtocol.dataReceived.__code__.co_names),
            {"_dataReceived", "dataReceived", "debug", "hltype", "hlval", "len", "log", "peer"},
        )
        self.assertEqual(
            set(autobahn_protocol.WebSocketProtocol.sendData.__code__.co_names),
            {
                "STATE_CONNECTING", "STATE_OPEN", "STATE_PROXY_CONNECTING", "WebSocketProtocol", "_trigger",
                "append", "debug", "hltype", "hlval", "len", "log", "logOctets", "logTxOctets",
                "outgoingOctetsWireLevel", "peer", "preopenOutgoingOctetsWireLevel", "sendData",
                "send_queue", "state", "trafficStats", "transport", "write",
            },
        )

    def test_open_connection_keeps_no_handshake_bytes_and_no_empty_queue(self) -> None:
        """Once open, a connection holds no copy of the request or the 101 answer and no empty send
        queue (``ocppgw.ws.lean``); a synchronous send still gets a queue and arrives, in order."""
        protocol, transport = self.connect(upgrade_request("/ocpp/CP1"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101"))
        self.assertEqual(
            (protocol.http_request_data, protocol.http_response_data, protocol.http_status_line),
            (None, None, None),
        )
        self.assertIs(protocol.send_queue, NO_QUEUE)
        self.assertEqual(protocol.http_headers["sec-websocket-protocol"], "ocpp1.6")
        transport.clear()
        protocol.sendData(b"first", sync=True)
        protocol.sendData(b"second")
        self.assertIsInstance(protocol.send_queue, deque)
        self.clock.advance(1)
        self.assertEqual(transport.value(), b"firstsecond")

    def test_handshake_refusals(self) -> None:
        """Bad ids and subprotocols get their HTTP status and nothing is attached."""
        cases = [
            (upgrade_request("/ocpp/a%2Fb"), "400"),
            (upgrade_request("/ocpp/"), "400"),
            (upgrade_request("/ocpp/ok", protocols="ocpp2.0.1"), "400"),
            (upgrade_request("/ocpp/ok", protocols="OCPP1.6"), "400"),
            (upgrade_request("/elsewhere/ok"), "404"),
        ]
        for request, status in cases:
            _, transport = self.connect(request)
            self.assertTrue(
                transport.value().startswith(f"HTTP/1.1 {status}".encode()), transport.value()[:60]
            )
        self.assertIsNone(self.router.session("ok"))
        self.assertEqual(self.metrics.value("connects"), 0)
        self.assertEqual(self.link.published, [])

    def test_frame_fed_byte_by_byte(self) -> None:
        """A Call split into single bytes is reassembled and published once."""
        frame = client_frame(json.dumps([2, "u1", "Heartbeat", {}]).encode())
        self.connect(upgrade_request("/ocpp/CP2") + frame, byte_by_byte=True)
        (published,) = self.link.published_to("ocpp/cp/CP2")
        self.assertEqual(
            published.json(), {"MessageTypeId": 2, "UniqueId": "u1", "Action": "Heartbeat", "Payload": {}}
        )

    def test_pong_counts_as_activity(self) -> None:
        """A pong moves the liveness deadline: no close at the original deadline."""
        protocol, transport = self.connect(upgrade_request("/ocpp/CP3"))
        self.clock.advance(50)
        with replace_loop(self.clock):
            protocol.dataReceived(client_frame(b"ping", opcode=0xA))
        self.clock.advance(15)
        self.assertIsNotNone(self.router.session("CP3"))
        self.assertFalse(transport.disconnecting)
        self.clock.advance(50)
        self.assertEqual(self.metrics.value("liveness_closes"), 1)

    def test_invalid_frame_counts_as_activity(self) -> None:
        """Even a frame the codec refuses proves the charge point is alive."""
        protocol, transport = self.connect(upgrade_request("/ocpp/CP4"))
        self.clock.advance(50)
        with replace_loop(self.clock):
            protocol.dataReceived(client_frame(b"garbage"))
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.metrics.value("liveness_closes"), 0)
        self.clock.advance(2)
        self.assertEqual(self.metrics.value("liveness_closes"), 1)

    def test_binary_frame_closes(self) -> None:
        """A binary frame is not OCPP-J: the connection is closed with 1003."""
        protocol, transport = self.connect(upgrade_request("/ocpp/CP4"))
        transport.clear()
        with replace_loop(self.clock):
            protocol.dataReceived(client_frame(b"\x00\x01", opcode=2))
        sent = transport.value()
        self.assertEqual(sent[0], 0x88)
        self.assertEqual(struct.unpack("!H", sent[2:4])[0], 1003)
        self.assertEqual(self.link.published_to("ocpp/cp/CP4"), [])


class SendTests(ServerTestCase):
    """What the gateway writes to a charge point, whatever its size or the connection's state."""

    def setUp(self) -> None:
        super().setUp()
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_larger_than_the_receive_limit(self) -> None:
        """A frame over max_frame_size (Autobahn's maxMessagePayloadSize) is written, not raised."""
        protocol, transport = self.connect(upgrade_request("/ocpp/CP1"))
        transport.clear()
        limit = protocol.maxMessagePayloadSize
        self.assertGreater(limit, 0)
        with replace_loop(self.clock):
            protocol.send_text("x" * (limit + 10))
        self.assertEqual(len(transport.value()), limit + 10 + 10)  # 10: the header of a 64-bit length
        self.assertEqual(protocol.maxMessagePayloadSize, limit)

    def test_send_that_raises(self) -> None:
        """A write that raises is logged without a traceback and the connection aborted."""
        protocol, transport = self.connect(upgrade_request("/ocpp/CP1"))

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("broken pipe\n" + "p" * 10_000)

        protocol.sendMessage = broken
        with replace_loop(self.clock):
            protocol.send_text("[3,\"u\",{}]")
        self.assertTrue(transport.disconnecting or transport.disconnected)
        self.assertFalse([e for e in self.events if "log_failure" in e])
        (error,) = [e for e in self.events if e.get("log_level") == LogLevel.error]
        self.assertIn("RuntimeError", error["error"])
        self.assertLess(len(error["error"]), 300)

    def test_close_in_every_state(self) -> None:
        """close() before the handshake, after it, twice, and with any code never raises."""
        with replace_loop(self.clock):
            protocol = self.factory.buildProtocol(IPv4Address("TCP", "10.1.2.3", 5555))
            protocol.makeConnection(_Transport(peerAddress=IPv4Address("TCP", "10.1.2.3", 5555)))
            protocol.close(1011, "during the handshake")
            protocol.close(1000, "again")
            opened, _ = self.connect(upgrade_request("/ocpp/CP2"))
            for code in (1000, 1001, 1003, 1009, 1011, 4000, 2999, 999):
                opened.close(code, "r" * 500)
            opened.send_text("after close")

    def test_close_that_raises(self) -> None:
        """A close that raises inside Autobahn is logged without a traceback."""
        protocol, transport = self.connect(upgrade_request("/ocpp/CP3"))

        def broken(*args: Any, **kwargs: Any) -> None:
            raise ValueError("nope")

        protocol.sendCloseFrame = broken
        with replace_loop(self.clock):
            protocol.close(1011, "internal error")
        self.assertFalse([e for e in self.events if "log_failure" in e])
        self.assertTrue(transport.disconnecting or transport.disconnected)
