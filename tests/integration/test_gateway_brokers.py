"""The gateway suite's broker-facing cases on RabbitMQ (3.10, MQTT plugin, shared by every test:
each has its own topic prefix) and on a private single-node NATS server (MQTT on JetStream).

No broker-restart case runs here: RabbitMQ is shared, and NATS 2.9.10 sometimes forgets the
recorder's persistent session across its restart (README, "Brokers"), which would lose the test's
messages, not the gateway's.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import inlineCallbacks

from tests.integration import test_gateway as suite
from tests.integration.brokers import NATS, RABBITMQ


class BootAndCommandOnRabbitMQ(suite.BootAndCommandTests):
    broker_kind = RABBITMQ


class BootAndCommandOnNATS(suite.BootAndCommandTests):
    broker_kind = NATS


class QueueOnRabbitMQ(suite.QueueTests):
    broker_kind = RABBITMQ


class QueueOnNATS(suite.QueueTests):
    broker_kind = NATS


class SchemaOnRabbitMQ(suite.SchemaTests):
    broker_kind = RABBITMQ


class SchemaOnNATS(suite.SchemaTests):
    broker_kind = NATS


class BadInputOnRabbitMQ(suite.BadInputTests):
    broker_kind = RABBITMQ


class BadInputOnNATS(suite.BadInputTests):
    broker_kind = NATS


class LivenessOnRabbitMQ(suite.LivenessTests):
    broker_kind = RABBITMQ


class LivenessOnNATS(suite.LivenessTests):
    broker_kind = NATS


class TakeoverOnRabbitMQ(suite.TakeoverTests):
    broker_kind = RABBITMQ


class TakeoverOnNATS(suite.TakeoverTests):
    broker_kind = NATS


class _UnsafeIdCases(suite._GatewayTestCase):
    """``[mqtt] broker`` (set by the harness) refuses ids the broker cannot carry in a topic."""

    unsafe_ids: tuple[str, ...] = ()

    @inlineCallbacks
    def test_unsafe_ids_refused_link_stays(self) -> Any:
        """Each unsafe id gets HTTP 400; the broker link stays up and other charge points are served."""
        for cid in self.unsafe_ids:
            status, _, _ = yield self.gw.refused(cid, url=self.gw.url(quote(cid, safe="")))
            self.assertEqual(status, 400, cid)
        client = yield self.gw.connect("CP-ok_1", ocpp_client=False)
        yield client.send(json.dumps([2, "h1", "Heartbeat", {}]))
        (heartbeat,) = yield self.gw.wait_messages("ocpp/cp/CP-ok_1", 1)
        self.assertEqual(heartbeat["UniqueId"], "h1")
        self.assertEqual(self.gw.service.metrics.value("mqtt_reconnects"), 0)


class UnsafeIdsOnRabbitMQ(_UnsafeIdCases):
    """RabbitMQ 3.10 delivers ocpp/cp/CP.1 as ocpp/cp/CP/1 and CP*1 as CP+1."""

    broker_kind = RABBITMQ
    unsafe_ids = ("CP.1", "CP*1")


class UnsafeIdsOnNATS(_UnsafeIdCases):
    """NATS 2.9 closes the connection on a publish to ocpp/cp/CP.1 (the gateway would reconnect and
    replay it forever) and refuses the subscription to ocpp/cs/CP.1."""

    broker_kind = NATS
    unsafe_ids = ("CP.1", "CP 1")
