"""Autobahn's WebSocket timers on the reactor's clock: each configured duration fires on the dot.

Every protocol here runs on a ``task.Clock`` started at a fraction of a second, where txaio's batched
timer (which rounds deadlines down to whole seconds) would fire early.
"""

from __future__ import annotations

import struct
from typing import Any

import txaio
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from txaio.testutil import replace_loop

from ocppgw.auth import AllowAll
from ocppgw.config import config_from_string
from ocppgw.core.router import Router
from ocppgw.metrics import Metrics
from ocppgw.ws.server import CLOSE_HANDSHAKE_TIMEOUT, OcppServerFactory
from ocppgw.ws.timers import BATCHED_TIMER, ReactorTimer, use_reactor_clock
from tests.fakes import FakeMqttLink
from tests.test_ws_server import client_frame, upgrade_request

txaio.use_twisted()

START = 1000.3  # not a whole second: a deadline rounded down to one fires early
TICK = 0.001


class ClockedTransport(StringTransport):
    """A StringTransport that notes when it was aborted, on the test's clock."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "10.1.2.3", 5555))
        self.clock = clock
        self.aborted_at: float | None = None

    def unregisterProducer(self) -> None:
        self.producer = None

    def abortConnection(self) -> None:
        if self.aborted_at is None:
            self.aborted_at = self.clock.seconds()
        super().abortConnection()


class ClockedGateway:
    """A router on a fake link and one listener's WebSocket factory, all on one ``Clock``."""

    def __init__(self, testcase: SynchronousTestCase, gateway: str) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        replacing = replace_loop(self.clock)
        replacing.__enter__()
        testcase.addCleanup(replacing.__exit__, None, None, None)
        testcase.addCleanup(self._cancel_timers)
        self.link = FakeMqttLink(connected=True)
        self.config = config_from_string(
            "[gateway]\nnode_name = gw1\n" + gateway + "[listeners.ws.default]\nbind = 33033\n", environ={}
        )
        self.metrics = Metrics()
        self.router = Router(self.config, self.link, self.clock, self.metrics)
        self.factory = OcppServerFactory(
            self.router, AllowAll(), self.config.listeners[0], self.config.gateway, self.metrics, self.clock
        )

    def _cancel_timers(self) -> None:
        for call in self.clock.getDelayedCalls():
            call.cancel()

    def open(self, cid: str | None = "CP1") -> tuple[Any, ClockedTransport]:
        """A connection; with ``cid``, its WebSocket handshake done."""
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "10.1.2.3", 5555))
        transport = ClockedTransport(self.clock)
        protocol.makeConnection(transport)
        if cid is not None:
            protocol.dataReceived(upgrade_request(f"/ocpp/{cid}"))
            assert transport.value().startswith(b"HTTP/1.1 101"), transport.value()[:80]
            transport.clear()
        return protocol, transport

    def lose(self, protocol: Any) -> None:
        """The reactor reports the aborted socket gone."""
        protocol.connectionLost(Failure(ConnectionAborted()))

    def presence(self, cid: str = "CP1") -> list[dict[str, Any]]:
        return [m.json() for m in self.link.published_to(f"ocpp/cp/{cid}/Presence")]


def _pings(data: bytes) -> int:
    """How many ping frames (opcode 9, unmasked server frames) ``data`` starts with back to back."""
    count = 0
    while len(data) >= 2 and data[0] == 0x89:
        count += 1
        data = data[2 + (data[1] & 0x7F) :]
    return count


class OpenHandshakeTimeoutTests(SynchronousTestCase):
    def check(self, idle: str, seconds: float) -> None:
        gateway = ClockedGateway(self, f"idle_timeout = {idle}\nping_interval = 0\n")
        _, transport = gateway.open(cid=None)
        gateway.clock.advance(seconds - TICK)
        self.assertIsNone(transport.aborted_at, f"{idle}: dropped {TICK}s before its deadline")
        gateway.clock.advance(TICK)
        self.assertEqual(transport.aborted_at, gateway.clock.seconds(), f"{idle}: not dropped on time")

    def test_half_second(self) -> None:
        """idle_timeout = 500ms drops a silent connection at 0.5 s, not before."""
        self.check("500ms", 0.5)

    def test_three_seconds(self) -> None:
        """idle_timeout = 3s drops a silent connection at 3 s, not at 2.x s."""
        self.check("3s", 3.0)

    def test_handshake_in_time_cancels(self) -> None:
        """A connection that finishes its handshake is not dropped at the idle deadline."""
        gateway = ClockedGateway(self, "idle_timeout = 500ms\nping_interval = 0\n")
        _, transport = gateway.open()
        gateway.clock.advance(10)
        self.assertIsNone(transport.aborted_at)


class AutoPingTests(SynchronousTestCase):
    def check(self, interval: float, timeout: float) -> None:
        gateway = ClockedGateway(
            self, f"ping_interval = {interval * 1000:g}ms\nping_timeout = {timeout * 1000:g}ms\n"
        )
        protocol, transport = gateway.open()
        gateway.clock.advance(interval - TICK)
        self.assertEqual(_pings(transport.value()), 0, "ping sent before ping_interval")
        gateway.clock.advance(TICK)
        self.assertEqual(_pings(transport.value()), 1, "no ping at ping_interval")
        gateway.clock.advance(timeout - TICK)
        self.assertIsNone(transport.aborted_at, "aborted before ping_timeout")
        gateway.clock.advance(TICK)
        self.assertEqual(transport.aborted_at, gateway.clock.seconds(), "not aborted at ping_timeout")
        gateway.lose(protocol)
        self.assertIsNone(gateway.router.session("CP1"))

    def test_half_second(self) -> None:
        """A ping 0.5 s after the handshake; no pong within 0.5 s aborts the connection then."""
        self.check(0.5, 0.5)

    def test_three_seconds(self) -> None:
        """A ping after 3 s; no pong within 3 s aborts then, not after 2.x s."""
        self.check(3.0, 3.0)

    def test_pong_in_time_keeps_the_connection(self) -> None:
        """A pong before ping_timeout keeps the connection, and the next ping follows ping_interval later."""
        gateway = ClockedGateway(self, "ping_interval = 500ms\nping_timeout = 500ms\n")
        protocol, transport = gateway.open()
        gateway.clock.advance(0.5)
        ping = transport.value()
        length = ping[1] & 0x7F
        transport.clear()
        gateway.clock.advance(0.25)
        protocol.dataReceived(client_frame(ping[2 : 2 + length], opcode=0xA))
        gateway.clock.advance(0.5 - TICK)
        self.assertIsNone(transport.aborted_at)
        self.assertEqual(_pings(transport.value()), 0)
        gateway.clock.advance(TICK)
        self.assertEqual(_pings(transport.value()), 1)
        self.assertIsNone(transport.aborted_at)


class CloseHandshakeTimeoutTests(SynchronousTestCase):
    def test_unanswered_close_aborts_on_time(self) -> None:
        """The gateway's close frame unanswered: the socket is aborted CLOSE_HANDSHAKE_TIMEOUT later."""
        gateway = ClockedGateway(self, "ping_interval = 0\n")
        protocol, transport = gateway.open()
        protocol.close(1000, "bye")
        self.assertEqual(transport.value()[0], 0x88)
        self.assertEqual(struct.unpack("!H", transport.value()[2:4])[0], 1000)
        gateway.clock.advance(CLOSE_HANDSHAKE_TIMEOUT - TICK)
        self.assertIsNone(transport.aborted_at)
        gateway.clock.advance(TICK)
        self.assertEqual(transport.aborted_at, gateway.clock.seconds())


class ReactorTimerTests(SynchronousTestCase):
    def test_factory_uses_the_reactor_clock(self) -> None:
        """The factory's timer is a ReactorTimer on the factory's reactor; Autobahn still reads it."""
        gateway = ClockedGateway(self, "")
        timer = getattr(gateway.factory, BATCHED_TIMER)
        self.assertIsInstance(timer, ReactorTimer, f"Autobahn's {BATCHED_TIMER} was not replaced")
        self.assertIs(timer.clock, gateway.clock)

    def test_cancel_is_idempotent(self) -> None:
        """A call cancelled after it fired, or twice, raises nothing (Autobahn does both)."""
        clock = Clock()
        fired: list[int] = []
        call = ReactorTimer(clock).call_later(0.5, fired.append, 1)
        clock.advance(0.5)
        call.cancel()
        other = ReactorTimer(clock).call_later(0.5, fired.append, 2)
        other.cancel()
        other.cancel()
        clock.advance(1)
        self.assertEqual(fired, [1])

    def test_an_autobahn_without_the_attribute_is_named(self) -> None:
        """If an Autobahn release drops _batched_timer, start-up fails with a message naming it."""
        with self.assertRaises(TypeError) as caught:
            use_reactor_clock(object(), Clock())
        self.assertIn(BATCHED_TIMER, str(caught.exception))
