"""Listener limits: config keys, token bucket, connection counting and the send timeout, on task.Clock."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.config import ConfigError, ListenerSection, config_from_string
from ocppgw.metrics import Metrics
from ocppgw.ws.limits import ListenerLimits, TokenBucket


def listener(**values: Any) -> ListenerSection:
    return ListenerSection(kind="ws", name="t", host="127.0.0.1", port=0, **values)


class FakeSocket(FileDescriptor):
    """A socket-level transport whose write buffer the test fills and drains by hand."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(reactor=clock)
        self.aborted = False
        self.connected = 1

    def startWriting(self) -> None:
        pass

    def stopWriting(self) -> None:
        pass

    def stopReading(self) -> None:
        pass

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "192.0.2.1", 40000)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 33033)

    def abortConnection(self) -> None:
        self.aborted = True

    def drain(self, count: int) -> None:
        """The kernel took ``count`` bytes."""
        self.dataBuffer = (self.dataBuffer[self.offset :] + b"".join(self._tempDataBuffer))[count:]
        self.offset = 0
        self._tempDataBuffer = []
        self._tempDataLen = 0


class Recorder(Protocol):
    pass


def make(clock: Clock, **values: Any) -> tuple[ListenerLimits, Metrics]:
    metrics = Metrics()
    return ListenerLimits(Factory.forProtocol(Recorder), listener(**values), clock, metrics), metrics


def connect(limits: ListenerLimits, clock: Clock) -> tuple[Any, FakeSocket]:
    transport = FakeSocket(clock)
    protocol = limits.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    return protocol, transport


class ConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        section = config_from_string("[listeners.ws.a]\nbind = 33033\n").listeners[0]
        self.assertEqual(section.max_connections, 1024000)
        self.assertEqual(section.max_conn_rate, 1000.0)
        self.assertEqual((section.nodelay, section.reuseaddr), (True, True))
        self.assertEqual((section.recbuf, section.sndbuf), (None, None))
        self.assertEqual((section.send_timeout, section.send_timeout_close), (15.0, True))
        self.assertEqual(section.ignored_options, ())

    def test_values(self) -> None:
        text = (
            "[listeners.wss.b]\nbind = 33034\ncertfile = c.pem\nkeyfile = k.pem\n"
            "max_connections = infinity\nmax_conn_rate = 50/s\nnodelay = false\nreuseaddr = true\n"
            "recbuf = 4KB\nsndbuf = 8192\nsend_timeout = 1500ms\nsend_timeout_close = off\n"
            "acceptors = 16\nactive_n = 100\n"
        )
        section = config_from_string(text).listeners[0]
        self.assertIsNone(section.max_connections)
        self.assertEqual(section.max_conn_rate, 50.0)
        self.assertFalse(section.nodelay)
        self.assertEqual((section.recbuf, section.sndbuf), (4096, 8192))
        self.assertEqual((section.send_timeout, section.send_timeout_close), (1.5, False))
        self.assertEqual(section.ignored_options, ("acceptors", "active_n"))

    def test_bad_values(self) -> None:
        text = (
            "[listeners.ws.a]\nbind = 33033\nmax_connections = 0\nmax_conn_rate = fast\n"
            "send_timeout = 0s\nsndbuf = big\n"
        )
        with self.assertRaises(ConfigError) as caught:
            config_from_string(text, source="gw.ini")
        problems = caught.exception.problems
        self.assertEqual(len(problems), 4, problems)
        self.assertIn("gw.ini: [listeners.ws.a] max_connections: expected an integer >= 1", problems[0])
        self.assertIn(
            "[listeners.ws.a] max_conn_rate: expected a number of connections per second", problems[1]
        )


class TokenBucketTests(SynchronousTestCase):
    def test_refills_at_rate(self) -> None:
        clock = Clock()
        bucket = TokenBucket(rate=2, capacity=2, clock=clock)
        self.assertEqual([bucket.take() for _ in range(3)], [True, True, False])
        clock.advance(0.5)
        self.assertEqual([bucket.take() for _ in range(2)], [True, False])
        clock.advance(100)
        self.assertEqual([bucket.take() for _ in range(3)], [True, True, False])


class ConnectionLimitTests(SynchronousTestCase):
    def test_max_connections(self) -> None:
        clock = Clock()
        limits, metrics = make(clock, max_connections=2, max_conn_rate=None)
        first, _ = connect(limits, clock)
        connect(limits, clock)
        self.assertEqual(limits.live, 2)
        refused, transport = connect(limits, clock)
        self.assertTrue(transport.aborted)
        self.assertNotIn(refused, limits.protocols)
        self.assertEqual(limits.live, 2)
        self.assertEqual(metrics.value("connections_refused", listener="ws.t", reason="max_connections"), 1)
        first.connectionLost(None)
        self.assertEqual(limits.live, 1)
        _, transport = connect(limits, clock)
        self.assertFalse(transport.aborted)
        self.assertEqual(limits.live, 2)

    def test_rate_refuses_once_bucket_empty(self) -> None:
        clock = Clock()
        limits, metrics = make(clock, max_connections=None, max_conn_rate=3.0)
        outcomes = [connect(limits, clock)[1].aborted for _ in range(5)]
        self.assertEqual(outcomes, [False, False, False, True, True])
        clock.advance(1.0 / 3)
        self.assertEqual([connect(limits, clock)[1].aborted for _ in range(2)], [False, True])
        self.assertEqual(limits.refused["max_conn_rate"], 3)
        self.assertEqual(metrics.value("connections_refused", listener="ws.t", reason="max_conn_rate"), 3)


class SendTimeoutTests(SynchronousTestCase):
    def test_peer_that_does_not_read_is_aborted(self) -> None:
        clock = Clock()
        limits, metrics = make(clock, send_timeout=1.0)
        protocol, transport = connect(limits, clock)
        protocol.write(b"x" * 1000)
        for _ in range(3):
            clock.advance(0.25)
        self.assertFalse(transport.aborted)
        clock.advance(0.25)
        clock.advance(0.25)
        self.assertTrue(transport.aborted)
        self.assertEqual(metrics.value("send_timeouts", listener="ws.t"), 1)

    def test_progress_resets_the_timer(self) -> None:
        clock = Clock()
        limits, _ = make(clock, send_timeout=1.0)
        protocol, transport = connect(limits, clock)
        protocol.write(b"x" * 1000)
        for _ in range(20):
            clock.advance(0.25)
            transport.drain(40)
        self.assertFalse(transport.aborted)
        transport.drain(10000)
        clock.advance(0.25)
        self.assertEqual(limits._watched, set())
        self.assertIsNone(limits._checker)

    def test_close_off_only_reports(self) -> None:
        clock = Clock()
        limits, metrics = make(clock, send_timeout=1.0, send_timeout_close=False)
        protocol, transport = connect(limits, clock)
        protocol.write(b"x" * 1000)
        clock.pump([0.25] * 20)
        self.assertFalse(transport.aborted)
        self.assertEqual(metrics.value("send_timeouts", listener="ws.t"), 1)

    def test_lost_connection_is_forgotten(self) -> None:
        clock = Clock()
        limits, _ = make(clock, send_timeout=1.0)
        protocol, transport = connect(limits, clock)
        protocol.write(b"x")
        protocol.connectionLost(None)
        clock.pump([0.25] * 8)
        self.assertFalse(transport.aborted)
        self.assertIsNone(limits._checker)


def refusal_lines(events: Any) -> list[tuple[int, dict[str, int], str]]:
    """(count, count by reason, text) of each refusal summary among captured log events."""
    return [
        (e["count"], e.get("refused", {}), formatEvent(e))
        for e in events
        if e.get("log_format", "").startswith("listener {listener}: refused")
    ]


class RefusalLogTests(SynchronousTestCase):
    def test_burst_logged_with_its_true_count(self) -> None:
        """448 refusals accepted together: one line saying 448, by reason, once the iteration ends."""
        clock = Clock()
        limits, metrics = make(clock, max_connections=2, max_conn_rate=100.0)
        with capturedLogs() as events:
            connect(limits, clock)
            connect(limits, clock)
            for _ in range(448):
                connect(limits, clock)
            self.assertEqual(refusal_lines(events), [])
            clock.advance(0)
            lines = refusal_lines(events)
        self.assertEqual(
            [(count, by_reason) for count, by_reason, _ in lines],
            [(448, {"max_connections": 448, "max_conn_rate": 0})],
        )
        self.assertIn("refused 448 connection(s) (max_connections 448;", lines[0][2])
        self.assertEqual(metrics.total("connections_refused"), 448)

    def test_at_most_one_line_a_second(self) -> None:
        """Refusals spread over time: a line at most every second, the counts adding up to all of them."""
        clock = Clock()
        limits, metrics = make(clock, max_connections=None, max_conn_rate=2.0)
        times = []
        with capturedLogs() as events:
            for _ in range(95):  # 10 arrivals a second for 9.5 s; the bucket lets 2 a second in
                connect(limits, clock)
                clock.advance(0.1)
                if len(refusal_lines(events)) > len(times):
                    times.append(clock.seconds())
            clock.advance(1.0)
            lines = refusal_lines(events)
        refused = limits.refused["max_conn_rate"]
        self.assertEqual(sum(count for count, _, _ in lines), refused)
        self.assertEqual(metrics.total("connections_refused"), refused)
        self.assertGreater(refused, 70)
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        self.assertTrue(all(gap >= 1.0 - 1e-9 for gap in gaps), gaps)
        self.assertLessEqual(len(lines), 11)

    def test_stop_logs_what_is_left(self) -> None:
        """Stopping the listener logs the refusals not yet logged and leaves no timer."""
        clock = Clock()
        limits, _ = make(clock, max_connections=1, max_conn_rate=None)
        connect(limits, clock)
        with capturedLogs() as events:
            connect(limits, clock)
            clock.advance(0)
            connect(limits, clock)
            connect(limits, clock)
            limits.stop()
            lines = refusal_lines(events)
        self.assertEqual([count for count, _, _ in lines], [1, 2])
        self.assertEqual(clock.getDelayedCalls(), [])
