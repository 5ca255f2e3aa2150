"""Tests for ocppgw.ws.proxy: the PROXY header layer, its deadline and what it passes on."""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.metrics import Metrics
from ocppgw.ws.proxy import ProxyProtocolFactory

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(source: str, port: int) -> bytes:
    addresses = bytes(int(part) for part in source.split(".")) + bytes([127, 0, 0, 1])
    body = addresses + struct.pack("!HH", port, 33033)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.peers: list[Any] = []
        self.lost = False

    def connectionMade(self) -> None:
        self.peers.append(self.transport.getPeer())

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class AbortableTransport(StringTransport):
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class ProxyProtocolWrapperTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.factory = ProxyProtocolFactory(Factory.forProtocol(Recorder), self.clock, 3.0, self.metrics)
        self.transport = AbortableTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.wrapper = self.factory.buildProtocol(self.transport.getPeer())
        self.wrapper.makeConnection(self.transport)
        self.inner: Recorder = self.wrapper.wrappedProtocol

    def refused(self, reason: str) -> float:
        return self.metrics.value("handshakes_refused", status="proxy", reason=reason)

    def test_v1_in_pieces(self) -> None:
        """A v1 header split over several reads, followed by data: the inner protocol connects once
        the header is whole, sees its source address, and gets the bytes after it."""
        for piece in (b"PR", b"OXY TCP4 10.1.2.3 127.0.0.1 5", b"555 33033\r\nGET /"):
            self.assertEqual(self.inner.peers, [])
            self.wrapper.dataReceived(piece)
        self.assertEqual(self.inner.peers, [IPv4Address("TCP", "10.1.2.3", 5555)])
        self.assertEqual(self.inner.data, b"GET /")
        self.wrapper.dataReceived(b" HTTP/1.1")
        self.assertEqual(self.inner.data, b"GET / HTTP/1.1")
        self.clock.advance(10)
        self.assertFalse(self.transport.aborted)

    def test_v2_short_first_read(self) -> None:
        """A v2 header whose first read is shorter than its fixed part still parses."""
        header = v2_header("192.0.2.7", 6000)
        self.wrapper.dataReceived(header[:5])
        self.wrapper.dataReceived(header[5:] + b"x")
        self.assertEqual(self.inner.peers, [IPv4Address("TCP", "192.0.2.7", 6000)])
        self.assertEqual(self.inner.data, b"x")

    def test_v1_tcp6(self) -> None:
        self.wrapper.dataReceived(b"PROXY TCP6 2001:db8::1 ::1 4000 33033\r\n")
        self.assertEqual(self.inner.peers, [IPv6Address("TCP", "2001:db8::1", 4000)])

    def test_v1_unknown_keeps_the_socket_address(self) -> None:
        """``PROXY UNKNOWN`` (bare, as HAProxy's health checks send it, or with ignored fields) carries no
        address: the connection goes on with the socket's own."""
        for header in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
            transport = AbortableTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40002))
            wrapper = self.factory.buildProtocol(transport.getPeer())
            wrapper.makeConnection(transport)
            wrapper.dataReceived(header + b"GET /")
            self.assertFalse(transport.aborted, header)
            self.assertEqual(wrapper.wrappedProtocol.peers, [IPv4Address("TCP", "127.0.0.1", 40002)])
            self.assertEqual(wrapper.wrappedProtocol.data, b"GET /")

    def test_timeout(self) -> None:
        """No complete header within the timeout: aborted, the inner protocol never connected."""
        self.wrapper.dataReceived(b"PROXY TCP4 10.1")
        self.clock.advance(2.9)
        self.assertFalse(self.transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.aborted)
        self.assertEqual(self.refused("proxy_header_timeout"), 1)
        self.wrapper.connectionLost(None)
        self.assertEqual((self.inner.peers, self.inner.lost), ([], False))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_malformed(self) -> None:
        """Not a PROXY header, a bad v1 header, a non-IP address: aborted at once, no traceback."""
        for data in (
            b"GET /ocpp/CP1 HTTP/1.1\r\n",
            b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 a b c d\r\n",
            b"PROXY TCP4 host 127.0.0.1 1 2\r\n",
            V2_SIGNATURE + b"\x99\x11\x00\x00",
        ):
            transport = AbortableTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40001))
            wrapper = self.factory.buildProtocol(transport.getPeer())
            wrapper.makeConnection(transport)
            inner = wrapper.wrappedProtocol
            wrapper.dataReceived(data)
            self.assertTrue(transport.aborted, data)
            wrapper.dataReceived(b"more")
            wrapper.connectionLost(None)
            self.assertEqual((inner.peers, inner.data, inner.lost), ([], b"", False), data)
        self.assertEqual(self.refused("proxy_header_invalid"), 5)

    def test_connection_lost_after_header(self) -> None:
        self.wrapper.dataReceived(b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 33033\r\n")
        self.wrapper.connectionLost(None)
        self.assertTrue(self.inner.lost)
        self.assertEqual(len(self.factory.protocols), 0)


class TwistedPrivateNamesTests(SynchronousTestCase):
    """``ocppgw.ws.proxy`` builds on Twisted's private haproxy modules; this fails naming what changed."""

    def test_private_names_still_there(self) -> None:
        """Every private module, class and attribute the PROXY layer uses still exists."""
        import importlib

        wanted = {
            "twisted.protocols.haproxy._exceptions": ["InvalidProxyHeader"],
            "twisted.protocols.haproxy._info": ["ProxyInfo"],
            "twisted.protocols.haproxy._v1parser": ["V1Parser"],
            "twisted.protocols.haproxy._v2parser": ["V2Parser"],
            "twisted.protocols.haproxy._wrapper": ["HAProxyProtocolWrapper", "HAProxyWrappingFactory"],
        }
        missing = []
        for module_name, names in wanted.items():
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                missing.append(module_name)
                continue
            missing.extend(f"{module_name}.{name}" for name in names if not hasattr(module, name))
        if not missing:
            from twisted.protocols.haproxy._v1parser import V1Parser
            from twisted.protocols.haproxy._v2parser import V2Parser
            from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper

            wrapper = HAProxyProtocolWrapper(Factory(), Protocol())
            state = ("_proxyInfo", "_parser")
            missing.extend(f"HAProxyProtocolWrapper.{a}" for a in state if not hasattr(wrapper, a))
            missing.extend(f"V1Parser.{a}" for a in ("parse", "feed") if not hasattr(V1Parser, a))
            missing.extend(f"V2Parser.{a}" for a in ("PREFIX", "feed") if not hasattr(V2Parser, a))
        self.assertEqual(missing, [], f"Twisted changed {missing}: ocppgw/ws/proxy.py must follow")
