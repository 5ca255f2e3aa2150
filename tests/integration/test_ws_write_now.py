"""Writes through ListenerLimits on real sockets, plain and TLS: small writes go straight to the kernel
(the socket is never registered for writing), big ones keep their order behind the bytes Twisted
buffers, and the send-timeout watch sees only what was buffered."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.ssl import CertificateOptions, KeyPair
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase

from ocppgw.config import ListenerSection
from ocppgw.metrics import Metrics
from ocppgw.ws.limits import ListenerLimits
from tests.support import poll_until as wait_for

BIG = bytes(range(256)) * 32768  # 8 MiB: more than the socket buffers take at once
ROUND_TRIPS = 40


class _Server(Protocol):
    """Answers every ``ping`` with ``pong``; ``big`` asks for BIG then ten numbered small writes."""

    def dataReceived(self, data: bytes) -> None:
        for _ in range(data.count(b"ping")):
            self.transport.write(b"pong")
        if b"big" in data:
            self.transport.write(BIG)
            for n in range(10):
                self.transport.write(b"%d;" % n)


class _Client(Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.connected_d: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.connected_d.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class WriteNowTests(TestCase):
    tls = False

    def setUp(self) -> None:
        self.registered: list[Any] = []
        real_add_writer = reactor.addWriter

        def add_writer(selectable: Any) -> None:
            self.registered.append(selectable)
            real_add_writer(selectable)

        self.patch(reactor, "addWriter", add_writer)
        app: Any = Factory.forProtocol(_Server)
        client_factory: Any = ClientFactory.forProtocol(_Client)
        if self.tls:
            key = KeyPair.generate(size=2048)
            certificate = key.selfSignedCert(1, CN="localhost")
            app = TLSMemoryBIOFactory(certificate.options(), False, app)
            client_factory = TLSMemoryBIOFactory(CertificateOptions(), True, client_factory)
        listener = ListenerSection(kind="ws", name="t", host="127.0.0.1", port=0)
        self.limits = ListenerLimits(app, listener, reactor, Metrics())
        self.watched: list[Any] = []
        real_watch = self.limits.watch
        self.limits.watch = lambda protocol: (self.watched.append(protocol), real_watch(protocol))[1]
        self.addCleanup(self.limits.stop)
        self.port = reactor.listenTCP(0, self.limits, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.client: _Client | None = None
        self.client_factory = client_factory

    @inlineCallbacks
    def connect(self) -> Any:
        built: list[Any] = []
        real_build = self.client_factory.buildProtocol

        def build(addr: Any) -> Any:
            protocol = real_build(addr)
            built.append(protocol)
            return protocol

        self.client_factory.buildProtocol = build
        connector = reactor.connectTCP("127.0.0.1", self.port.getHost().port, self.client_factory)
        self.addCleanup(lambda: wait_for(lambda: not self.limits.protocols))
        self.addCleanup(connector.disconnect)
        yield wait_for(lambda: built and len(self.limits.protocols) == 1)
        client = built[0]
        client = getattr(client, "wrappedProtocol", client)
        yield client.connected_d
        self.client = client
        self.server_socket = next(iter(self.limits.protocols)).transport

    def server_registrations(self) -> int:
        return sum(1 for selectable in self.registered if selectable is self.server_socket)

    @inlineCallbacks
    def test_small_writes_skip_the_write_registration(self) -> Any:
        """Round trips of small writes: each answer leaves at once, none registers for writing."""
        yield self.connect()
        assert self.client is not None
        for n in range(ROUND_TRIPS):
            self.client.transport.write(b"ping")
            yield wait_for(lambda n=n: len(self.client.received) == 4 * (n + 1))
        self.assertEqual(bytes(self.client.received), b"pong" * ROUND_TRIPS)
        self.assertEqual(self.server_registrations(), 0)
        self.assertEqual(self.watched, [])
        self.assertGreaterEqual(next(iter(self.limits.protocols)).written, 4 * ROUND_TRIPS)

    @inlineCallbacks
    def test_big_write_keeps_order_and_is_watched(self) -> Any:
        """What the kernel does not take is buffered by Twisted (registered, watched for the send
        timeout); writes after it queue behind it, so the peer reads everything in order."""
        yield self.connect()
        assert self.client is not None
        self.client.transport.write(b"big")
        expected = BIG + b"".join(b"%d;" % n for n in range(10))
        yield wait_for(lambda: len(self.client.received) >= len(expected), timeout=30)
        self.assertTrue(bytes(self.client.received) == expected, "bytes out of order or changed")
        self.assertGreater(self.server_registrations(), 0)
        self.assertEqual(len(set(self.watched)), 1)
        yield wait_for(lambda: not self.limits._watched)


class TlsWriteNowTests(WriteNowTests):
    tls = True
