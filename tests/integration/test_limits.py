"""Listener limits with real sockets: max_connections, max_conn_rate, send_timeout."""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import time
from typing import Any

from ocpp.v16 import call
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from ocppgw.ws.transport import buffered, socket_transport
from tests.integration.harness import GatewayHarness
from tests.integration.test_wss import _WssTestCase, probe
from tests.support import MqttRecorder, poll_until


class _LimitsTestCase(TestCase):
    extra_config = ""

    @inlineCallbacks
    def setUp(self) -> Any:
        self.gw = GatewayHarness(self, self.extra_config)
        self.sockets: list[socket.socket] = []
        self.addCleanup(self._close_sockets)
        yield self.gw.start()
        self.limits = self.gw.service.getServiceNamed("ws.default").factory

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()

    def raw(self, rcvbuf: int | None = None) -> socket.socket:
        """A plain TCP connection to the listener (connect returns once the kernel has it queued)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sockets.append(sock)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", self.gw.port))
        except ConnectionResetError:  # the refusal raced the connect; recv then reports it too
            pass
        sock.setblocking(False)
        return sock

    @inlineCallbacks
    def heartbeat(self, client: Any, cid: str, unique_id: str, central: Any = None) -> Any:
        """One Heartbeat round trip through MQTT, answered like a central system; returns the seconds.

        ``central``: an ``MqttRecorder`` on ``ocpp/cp/<cid>`` that answers instead of the harness's.
        """
        started = time.monotonic()
        yield client.send(json.dumps([2, unique_id, "Heartbeat", {}]))
        if central is None:
            yield poll_until(
                lambda: any(m["UniqueId"] == unique_id for m in self.gw.messages(f"ocpp/cp/{cid}")),
                timeout=10,
            )
        else:
            yield poll_until(
                lambda: any(json.loads(m.payload)["UniqueId"] == unique_id for m in central.messages()),
                timeout=10,
            )
        answer = {
            "MessageTypeId": 3,
            "UniqueId": unique_id,
            "Payload": {"currentTime": "2026-11-24T12:00:00Z"},
        }
        if central is None:
            self.gw.publish(cid, answer)
        else:
            central.publish(f"ocpp/cs/{cid}", json.dumps(answer).encode())
        frame = json.loads((yield client.recv()))
        self.assertEqual(frame[:2], [3, unique_id])
        return time.monotonic() - started


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


class MaxConnectionsTests(_LimitsTestCase):
    extra_config = "[listeners.ws.default]\nmax_connections = 3\n"

    @inlineCallbacks
    def test_connection_past_the_limit_refused(self) -> Any:
        """The 4th connection is closed at once; the first 3 keep working."""
        clients = []
        for n in range(3):
            clients.append((yield self.gw.connect(f"L{n}", ocpp_client=False)))
        self.assertEqual(self.limits.live, 3)
        with self.assertRaises(Exception):  # noqa: B017 - websockets reports the close in several ways
            yield self.gw.connect("L3", ocpp_client=False)
        self.assertEqual(self.limits.refused["max_connections"], 1)
        self.assertEqual(
            self.gw.service.metrics.value(
                "connections_refused", listener="ws.default", reason="max_connections"
            ),
            1,
        )
        for n, client in enumerate(clients):
            yield self.heartbeat(client, f"L{n}", f"hb{n}")
        self.assertIsNone(self.gw.service.router.session("L3"))
        # a raw socket past the limit sees its connection closed without a byte
        sock = self.raw()
        yield poll_until(lambda: _closed_by_peer(sock), timeout=10)
        # once one leaves, there is room again
        yield clients[0].close()
        yield poll_until(lambda: self.limits.live == 2, timeout=10)
        late = yield self.gw.connect("L4", ocpp_client=False)
        yield self.heartbeat(late, "L4", "hb4")


class MaxConnRateTests(_LimitsTestCase):
    extra_config = "[listeners.ws.default]\nmax_conn_rate = 5\n"

    @inlineCallbacks
    def test_burst_above_rate_refused(self) -> Any:
        """20 connections at once: about 5 (one second's tokens) are accepted, the rest closed at once."""
        burst = [self.raw() for _ in range(20)]
        yield poll_until(lambda: self.limits.live + self.limits.refused["max_conn_rate"] == 20, timeout=10)
        accepted = self.limits.live
        refused = self.limits.refused["max_conn_rate"]
        self.assertGreaterEqual(accepted, 5)
        self.assertLessEqual(accepted, 7)  # the bucket refills 5 a second while the burst is accepted
        self.assertEqual(refused, 20 - accepted)
        yield poll_until(lambda: sum(_closed_by_peer(s) for s in burst) >= refused, timeout=10)

    @inlineCallbacks
    def test_burst_logged_with_its_true_count(self) -> Any:
        """300 connections at once: the log lines' counts add up to every refusal, one line a second."""
        lines: list[tuple[float, int]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_format", "").startswith("listener {listener}: refused"):
                lines.append((event["log_time"], event["count"]))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        for _ in range(300):
            self.raw()
        yield poll_until(lambda: self.limits.live + self.limits.refused["max_conn_rate"] == 300, timeout=20)
        refused = self.limits.refused["max_conn_rate"]
        self.assertGreater(refused, 250)
        yield poll_until(lambda: sum(count for _, count in lines) == refused, timeout=10)
        times = [at for at, _ in lines]
        self.assertTrue(all(b - a >= 0.99 for a, b in itertools.pairwise(times)), times)


class SendTimeoutTests(_LimitsTestCase):
    extra_config = "[listeners.ws.default]\nsndbuf = 4096\nsend_timeout = 1500ms\n"

    @inlineCallbacks
    def test_peer_that_does_not_read_is_closed(self) -> Any:
        """A charge point that stops reading is aborted after send_timeout; another keeps its latency."""
        # FAST's central system has its own MQTT client: the harness's recorder sees the flood too
        # (it subscribes to #) and publishes it, so answers through it would queue behind it.
        central = MqttRecorder("127.0.0.1", self.gw.broker.port, "ocpp/cp/FAST", client_id="central-FAST")
        yield central.start()
        self.addCleanup(central.stop)
        fast = yield self.gw.connect("FAST", ocpp_client=False)
        before = []
        for n in range(3):
            before.append((yield self.heartbeat(fast, "FAST", f"before{n}", central)))

        slow = self.raw(rcvbuf=4096)
        key = base64.b64encode(os.urandom(16)).decode()
        slow.sendall(
            (
                f"GET /ocpp/SLOW HTTP/1.1\r\nHost: 127.0.0.1:{self.gw.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
            ).encode()
        )
        yield poll_until(lambda: self.gw.service.router.session("SLOW") is not None, timeout=10)
        flood_started = time.monotonic()
        blob = "x" * 2000
        for n in range(2000):
            self.gw.publish("SLOW", {"MessageTypeId": 3, "UniqueId": f"r{n}", "Payload": {"data": blob}})

        # The flood reaches the gateway through the broker first; latency is measured once it has
        # (the test's own MQTT publisher queues the heartbeat answers behind the flood).
        def flooded() -> bool:
            for protocol in list(self.limits.protocols):
                below = socket_transport(protocol.transport)
                if below is not None and buffered(below) > 200_000:
                    return True
            return self.gw.service.metrics.value("send_timeouts", listener="ws.default") == 1

        yield poll_until(flooded, timeout=15)
        during = []
        for n in range(3):
            during.append((yield self.heartbeat(fast, "FAST", f"during{n}", central)))
        yield poll_until(
            lambda: self.gw.service.metrics.value("send_timeouts", listener="ws.default") == 1, timeout=15
        )
        self.assertGreaterEqual(time.monotonic() - flood_started, 1.0)
        yield poll_until(lambda: self.gw.service.router.session("SLOW") is None, timeout=10)
        presence = yield self.gw.wait_messages("ocpp/cp/SLOW/Presence", 2)
        self.assertEqual(presence[-1]["reason"], "closed by gateway: peer has not read for 1.5s")
        self.assertEqual(self.gw.service.metrics.value("disconnects", reason="send_timeout"), 1)
        self.assertEqual(self.limits.live, 1)
        for n in range(3):
            during.append((yield self.heartbeat(fast, "FAST", f"after{n}", central)))
        self.assertLess(max(during), 2.0, (before, during))


def _probe(port: int, context: Any, cid: str) -> str:
    """``probe``, where a reset while connecting (the refusal racing the connect) is a refusal too."""
    try:
        return probe(port, context, cid)
    except OSError as e:
        return f"refused: {e}"


class WssMaxConnectionsTests(_WssTestCase):
    wss_options = "max_connections = 1\nmax_conn_rate = infinity"

    @inlineCallbacks
    def test_connection_past_the_limit_refused_before_tls(self) -> Any:
        """On wss the refusal comes before the TLS handshake; the charge point inside keeps working."""
        client = yield self.booted("CP1", self.context())
        outcome = yield deferToThread(_probe, self.port, self.context(), "CP2")
        self.assertTrue(outcome.startswith("refused: "), outcome)
        limits = next(s.factory for s in self.gw.service.listeners if s.listener.kind == "wss")
        self.assertEqual((limits.live, limits.refused["max_connections"]), (1, 1))
        reply = client.call(call.Heartbeat())
        yield poll_until(lambda: any(m["Action"] == "Heartbeat" for m in self.gw.messages("ocpp/cp/CP1")))
        (heartbeat,) = [m for m in self.gw.messages("ocpp/cp/CP1") if m["Action"] == "Heartbeat"]
        self.gw.publish(
            "CP1",
            {
                "MessageTypeId": 3,
                "UniqueId": heartbeat["UniqueId"],
                "Payload": {"currentTime": "2026-11-24T12:00:00Z"},
            },
        )
        result = yield reply
        self.assertEqual(result.current_time, "2026-11-24T12:00:00Z")
