"""The brokers the gateway suite runs against: a private Mosquitto (``tests.support``), a private
single-node NATS server with MQTT on JetStream, and the machine's RabbitMQ with its MQTT plugin.

RabbitMQ is shared by every test (``scripts/services.sh`` ``ensure_rabbitmq_mqtt`` sets it up: the
plugin on ``RABBITMQ_MQTT_PORT``, the vhost ``RABBITMQ_VHOST``), so each test gets its own topic
prefix (``namespace``) and client ids, and clears the retained messages it leaves
(``GatewayHarness.stop``).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from paho.mqtt import client as mqtt
from twisted.internet.defer import Deferred, succeed

from tests.support import MosquittoBroker, PrivateBroker, free_port, port_accepts

NATS_SERVER = "/usr/sbin/nats-server"
RABBITMQ_MQTT_PORT = int(os.environ.get("OCPPGW_TEST_RABBITMQ_MQTT_PORT", "1884"))
RABBITMQ_VHOST = "ocppgw-tests"

MOSQUITTO = "mosquitto"
RABBITMQ = "rabbitmq"
NATS = "nats"


class NatsBroker(PrivateBroker):
    """A private ``nats-server`` with JetStream (its store in the broker's directory, kept across
    ``stop()``/``start()`` until ``close()``) and MQTT on ``port``; NATS clients on ``client_port``."""

    name = "nats"

    def __init__(self, testcase: Any = None, port: int | None = None, reactor: Any = None) -> None:
        super().__init__(testcase, persistence=True, port=port, reactor=reactor)
        self.client_port = free_port()

    @property
    def mqtt_options(self) -> dict[str, str]:
        return {"broker": "nats"}

    def _ports(self) -> list[int]:
        return [self.port, self.client_port]

    def _command(self, directory: str) -> list[str]:
        conf = os.path.join(directory, "nats.conf")
        store = os.path.join(directory, "jetstream")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(
                f"server_name: ocppgw-test-{self.port}\n"
                f"listen: 127.0.0.1:{self.client_port}\n"
                f'jetstream {{ store_dir: "{store}" }}\n'
                f"mqtt {{ listen: 127.0.0.1:{self.port} }}\n"
            )
        return [NATS_SERVER, "-c", conf]


class SharedRabbitMQ:
    """The machine's RabbitMQ (MQTT plugin on 127.0.0.1:``RABBITMQ_MQTT_PORT``, user guest in the
    vhost ``RABBITMQ_VHOST``), seen through a topic prefix and client ids of this test's own."""

    name = "rabbitmq"
    host = "127.0.0.1"
    restartable = False
    _checked = False

    def __init__(self, testcase: Any = None, reactor: Any = None) -> None:
        self.port = RABBITMQ_MQTT_PORT
        self.tag = f"t{uuid.uuid4().hex[:12]}"
        self.namespace = f"{self.tag}/"

    @property
    def mqtt_options(self) -> dict[str, str]:
        return {
            "broker": "rabbitmq",
            "username": f"{RABBITMQ_VHOST}:guest",
            "password": "guest",
            "client_id": f"ocppgw-{self.tag}",
        }

    def start(self, timeout: float = 10.0) -> Deferred[None]:
        """Fires at once when the plugin answers; fails saying how to set it up otherwise."""
        if not SharedRabbitMQ._checked:
            self._check()
            SharedRabbitMQ._checked = True
        return succeed(None)

    def _check(self) -> None:
        setup = "scripts/test sets it up (scripts/services.sh: ensure_rabbitmq_mqtt)"
        if not port_accepts(self.port):
            raise RuntimeError(f"RabbitMQ's MQTT plugin does not listen on 127.0.0.1:{self.port}: {setup}")
        answers: list[Any] = []
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"check-{self.tag}")
        client.username_pw_set(self.mqtt_options["username"], self.mqtt_options["password"])
        client.on_connect = lambda _c, _u, _f, reason_code, _p: answers.append(reason_code)
        client.connect(self.host, self.port, keepalive=10)
        for _ in range(40):  # the CONNACK, up to 10 s
            client.loop(timeout=0.25)
            if answers:
                break
        client.disconnect()
        if not answers or answers[0].is_failure:
            answer = answers[0] if answers else "no CONNACK within 10 s"
            raise RuntimeError(f"RabbitMQ refused guest in vhost {RABBITMQ_VHOST} ({answer}): {setup}")

    def stop(self, timeout: float = 10.0) -> Deferred[None]:
        return succeed(None)

    close = stop


def make_broker(kind: str, testcase: Any = None, settings: tuple[str, ...] = ()) -> Any:
    """A broker of ``kind`` for one test (``settings``: mosquitto.conf lines, Mosquitto only)."""
    if kind == MOSQUITTO:
        return MosquittoBroker(testcase, persistence=True, settings=settings)
    if settings:
        raise ValueError(f"broker settings are Mosquitto's, not {kind}'s")
    if kind == NATS:
        return NatsBroker(testcase)
    if kind == RABBITMQ:
        return SharedRabbitMQ(testcase)
    raise ValueError(f"unknown broker {kind!r}")
