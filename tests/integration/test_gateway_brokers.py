"""The gateway suite's broker-facing cases on RabbitMQ (3.10, MQTT plugin, shared by every test:
each has its own topic prefix) and on a private single-node NATS server (MQTT on JetStream).

No broker-restart case runs here: RabbitMQ is shared, and NATS 2.9.10 sometimes forgets the
recorder's persistent session across its restart (README, "Brokers"), which would lose the test's
messages, not the gateway's.
"""

from __future__ import annotations

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
