"""WebSocket timers through real sockets: a 0.5 s idle_timeout and ping_timeout fire in [0.5, 0.65] s.

Times are the reactor's (``reactor.seconds()``), taken so that each measured span can only be
longer than the gateway's own: the start no later than the gateway arms its timer, the end no
earlier than it fires. The upper bound is the rule (+10% + 100 ms) with no extra slack needed
on loopback; the lower bound is the configured duration itself.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.trial.unittest import TestCase

from tests.integration.harness import UPGRADE, GatewayHarness
from tests.support import poll_until

DURATION = 0.5
LATEST = DURATION * 1.1 + 0.1


class _Timed(Protocol):
    """A raw client that notes when its connection ended; ``request`` is written once connected."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.lost: Deferred[float] = Deferred()

    def connectionMade(self) -> None:
        if self.request:
            self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.received += data  # pings are never answered

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(reactor.seconds())


def _connect(port: int, request: bytes = b"") -> _Timed:
    client = _Timed(request)
    factory = ClientFactory()
    factory.buildProtocol = lambda addr: client  # type: ignore[method-assign]
    reactor.connectTCP("127.0.0.1", port, factory)
    return client


class TimerTests(TestCase):
    @inlineCallbacks
    def setUp(self) -> Any:
        self.gw = GatewayHarness(
            self, "[gateway]\nidle_timeout = 500ms\nping_interval = 500ms\nping_timeout = 500ms\n"
        )
        yield self.gw.start()
        self.limits = self.gw.service.getServiceNamed("ws.default").factory

    @inlineCallbacks
    def test_idle_timeout(self) -> Any:
        """A connection that sends nothing is dropped 0.5 s to 0.65 s after it was made."""
        spans = []
        for _ in range(3):
            started = reactor.seconds()
            client = _connect(self.gw.port)
            ended = yield client.lost
            spans.append(ended - started)
        self.assertTrue(all(DURATION <= span <= LATEST for span in spans), spans)

    @inlineCallbacks
    def test_ping_timeout(self) -> Any:
        """No pong: aborted 0.5 s to 0.65 s after the ping, and the presence says the gateway did it."""
        client = _connect(self.gw.port, UPGRADE.format(cid="NOPONG").encode())
        yield poll_until(lambda: self.gw.service.router.session("NOPONG") is not None, timeout=10)
        (protocol,) = [
            p.wrappedProtocol for p in self.limits.protocols if getattr(p.wrappedProtocol, "cid", None)
        ]
        pinged: list[float] = []
        send_ping = protocol.sendPing

        def noted(payload: bytes | None = None) -> None:
            pinged.append(reactor.seconds())
            send_ping(payload)

        protocol.sendPing = noted
        ended = yield client.lost
        self.assertEqual(len(pinged), 1)
        span = ended - pinged[0]
        self.assertTrue(DURATION <= span <= LATEST, span)
        presence = yield self.gw.wait_messages("ocpp/cp/NOPONG/Presence", 2)
        self.assertEqual(presence[-1]["reason"], "closed by gateway: no pong within 0.5s")
        self.assertEqual(self.gw.service.metrics.value("disconnects", reason="ping_timeout"), 1)
