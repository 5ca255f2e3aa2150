"""Round trips against a Mosquitto that leaves Nagle on (``set_tcp_nodelay false``, its default)."""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.integration.harness import GatewayHarness
from tests.support import MqttRecorder, poll_until


class QuickAckTests(TestCase):
    extra_config = ""

    @inlineCallbacks
    def setUp(self) -> Any:
        self.gw = GatewayHarness(self, self.extra_config)
        yield self.gw.start()
        # A central system of its own, all at QoS 0: it sends one packet per Call (paho leaves Nagle
        # on), so the one delayed ACK left to wait for is the gateway's, after the broker's PUBACK.
        self.central = MqttRecorder(
            "127.0.0.1", self.gw.broker.port, "ocpp/cp/CP1", client_id="central-CP1", qos=0
        )
        yield self.central.start()
        self.addCleanup(self.central.stop)

    @inlineCallbacks
    def round_trip(self, client: Any, unique_id: str) -> Any:
        started = time.monotonic()
        yield client.send(json.dumps([2, unique_id, "Heartbeat", {}]))
        yield poll_until(
            lambda: any(json.loads(m.payload)["UniqueId"] == unique_id for m in self.central.messages()),
            timeout=10,
            interval=0.001,
        )
        answer = {
            "MessageTypeId": 3,
            "UniqueId": unique_id,
            "Payload": {"currentTime": "2026-11-24T12:00:00Z"},
        }
        self.central.publish("ocpp/cs/CP1", json.dumps(answer).encode(), qos=0)
        frame = json.loads((yield client.recv()))
        self.assertEqual(frame[:2], [3, unique_id])
        return time.monotonic() - started

    @inlineCallbacks
    def test_no_delayed_ack_stall(self) -> Any:
        """The broker sends its PUBACK for the Call, then the answer: without TCP_QUICKACK the answer
        waits for the gateway's delayed ACK (40 ms or more, every time); with it, it does not."""
        client = yield self.gw.connect("CP1", ocpp_client=False)
        yield self.round_trip(client, "warm")
        times = []
        for n in range(9):
            times.append((yield self.round_trip(client, f"u{n}")))
        times.sort()
        self.assertLess(times[len(times) // 2], 0.025, [round(t * 1000, 1) for t in times])
