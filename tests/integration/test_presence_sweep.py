"""A node restarted after a crash marks disconnected what its retained presence still calls connected.

Real Mosquitto with persistence, and a private NATS server; the crashed run's presence is published
retained by the test, as the broker would hold it after ``kill -9`` (a last will covers the node,
not its charge points). Not on RabbitMQ 3.x: a wildcard subscription gets no retained message there,
so ``[mqtt] broker = rabbitmq`` turns the sweep off (``tests/test_router.py``).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from ocppgw.service import GatewayService
from tests.integration.brokers import MOSQUITTO, NATS
from tests.integration.harness import GatewayHarness
from tests.support import poll_until


def _connected(cid: str, node: str) -> bytes:
    body = {
        "clientid": cid,
        "status": "connected",
        "node": node,
        "peer": "192.0.2.1:1",
        "at": "2026-01-01T00:00:00Z",
    }
    return json.dumps(body).encode()


class PresenceSweepTests(TestCase):
    broker_kind = MOSQUITTO

    @inlineCallbacks
    def test_restarted_node_sweeps_its_stale_presence(self) -> Any:
        """CP1 and CP2 become 'node restarted'; another node's CPX and CP3, back meanwhile, stay connected."""
        gw = GatewayHarness(self, broker=self.broker_kind)
        yield gw.start()
        first = gw.service
        yield first.stopService()
        stale = {"CP1": "testnode", "CP2": "testnode", "CP3": "testnode", "CPX": "othernode"}
        for cid, node in stale.items():
            yield gw.recorder.publish(gw.topic(f"ocpp/cp/{cid}/Presence"), _connected(cid, node), retain=True)

        # The new run starts while the broker does not answer, and CP3 reconnects to it first.
        gw.broker.freeze()
        self.addCleanup(gw.broker.thaw)
        second = gw.service = GatewayService(first.config, reactor)
        second.startService()
        yield gw.connect("CP3", ocpp_client=False)
        self.assertIsNotNone(second.router.session("CP3"))
        gw.broker.thaw()
        yield poll_until(lambda: second.link.connected, timeout=10)

        def swept(cid: str) -> bool:
            return any(m.get("reason") == "node restarted" for m in gw.messages(f"ocpp/cp/{cid}/Presence"))

        yield poll_until(lambda: swept("CP1") and swept("CP2"), timeout=10)

        # What a central system subscribing now reads: the retained presence of each charge point.
        reader = gw.mqtt_client(gw.topic("ocpp/cp/+/Presence"), client_id="late-reader", clean_session=True)
        yield reader.start()
        self.addCleanup(reader.stop)
        yield poll_until(lambda: len(reader.messages()) >= 4, timeout=10)
        retained = {json.loads(m.payload)["clientid"]: json.loads(m.payload) for m in reader.messages()}
        self.assertTrue(all(m.retain for m in reader.messages()))
        for cid in ("CP1", "CP2"):
            self.assertEqual(
                (retained[cid]["status"], retained[cid]["reason"], retained[cid]["node"]),
                ("disconnected", "node restarted", "testnode"),
            )
        self.assertEqual(
            (retained["CP3"]["status"], retained["CP3"]["peer"][:10]), ("connected", "127.0.0.1:")
        )
        self.assertEqual(retained["CPX"], json.loads(_connected("CPX", "othernode")))
        self.assertEqual(second.router.sweep.swept, 2)


class PresenceSweepOnNATSTests(PresenceSweepTests):
    broker_kind = NATS
