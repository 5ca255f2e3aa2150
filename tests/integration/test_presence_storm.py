"""Presence is state, never dropped: a storm of disconnects far beyond ``[mqtt] max_buffered_messages``.

A few thousand charge points (raw WebSocket handshakes from this process, no OCPP client: only the
connection matters) disconnect in the same reactor turn, or the gateway stops under them; a real
Mosquitto broker; the harness's recorder counts every ``disconnected`` presence that arrives.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.trial.unittest import TestCase

from tests.integration.harness import GatewayHarness
from tests.support import poll_until

COUNT = 2000
BUFFER = 100


class _IdleCharger(Protocol):
    """Sends the upgrade request and then nothing: the connection is all these tests need."""

    def __init__(self, cid: str) -> None:
        self.cid = cid

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                f"GET /ocpp/{self.cid} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
            ).encode()
        )


class PresenceStormTests(TestCase):
    timeout = 180

    @inlineCallbacks
    def setUp(self) -> Any:
        self.gw = GatewayHarness(
            self,
            extra_config=(
                f"[mqtt]\nmax_buffered_messages = {BUFFER}\n"
                "[gateway]\nshutdown_timeout = 60s\nping_interval = 0\n"
                "[listeners.ws.default]\nmax_conn_rate = infinity\n"
            ),
            broker_settings=("max_queued_messages 0",),  # the recorder must not lose what it is sent
        )
        yield self.gw.start()
        self.chargers: list[_IdleCharger] = []
        for n in range(COUNT):
            factory = ClientFactory.forProtocol(lambda n=n: self._made(f"S{n:05d}"))
            reactor.connectTCP("127.0.0.1", self.gw.port, factory)
            if n % 200 == 199:  # leave the gateway its turn to accept
                yield poll_until(lambda n=n: len(self.gw.service.router.attached()) > n - 200, timeout=60)
        yield poll_until(lambda: len(self.gw.service.router.attached()) == COUNT, timeout=60)
        self.addCleanup(self._close_all)

    def _made(self, cid: str) -> _IdleCharger:
        charger = _IdleCharger(cid)
        self.chargers.append(charger)
        return charger

    def _close_all(self) -> None:
        for charger in self.chargers:
            if charger.transport is not None:
                charger.transport.abortConnection()

    def presence(self, status: str) -> set[str]:
        """The charge points whose presence ``status`` the recorder received."""
        got = set()
        for message in self.gw.recorder.messages():
            if not message.topic.endswith("/Presence") or not message.topic.startswith("ocpp/cp/"):
                continue
            body = json.loads(message.payload)
            if body["status"] == status:
                got.add(body["clientid"])
        return got

    @inlineCallbacks
    def test_mass_disconnect(self) -> Any:
        """Every charge point of a mass disconnect has its 'disconnected' presence published."""
        expected = {f"S{n:05d}" for n in range(COUNT)}
        yield poll_until(lambda: self.presence("connected") == expected, timeout=60)
        self._close_all()
        yield poll_until(lambda: not self.gw.service.router.attached(), timeout=60)
        self.assertGreater(self.gw.service.metrics.value("presence_deferred"), 0)  # it was a storm
        yield poll_until(lambda: self.presence("disconnected") == expected, timeout=60)
        self.assertEqual(self.gw.service.metrics.value("mqtt_publish_refused"), 0)

    @inlineCallbacks
    def test_stop_publishes_every_presence(self) -> Any:
        """stopService closes every charge point and publishes each one's presence before disconnecting."""
        expected = {f"S{n:05d}" for n in range(COUNT)}
        service = self.gw.service
        yield service.stopService()
        self.assertGreater(service.metrics.value("presence_deferred"), 0)
        self.assertEqual(service.metrics.value("presence_lost_on_stop"), 0)
        yield poll_until(lambda: self.presence("disconnected") == expected, timeout=60)
        node = [json.loads(m.payload) for m in self.gw.recorder.messages("ocpp/gateway/testnode/Presence")]
        self.assertEqual(node[-1]["status"], "offline")
        self._close_all()  # they do not answer the gateway's close frames
        limits = service.getServiceNamed("ws.default").factory
        yield poll_until(lambda: limits.live == 0, timeout=30)
