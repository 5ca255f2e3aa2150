"""The probe behind README "Brokers" (facts marked *probe*), run by hand against one broker:

    .venv/bin/python -m tests.integration.broker_probe PORT [USERNAME [PASSWORD]]

(RabbitMQ: ``1884 ocppgw-tests:guest guest``). It prints what the broker did for retained messages,
QoS 2, wills, persistent sessions, client ids, ``$`` topics, shared subscriptions, topic characters
and large payloads; every topic is under a fresh prefix, and it clears the retained ones it sets.
Blocking paho clients with short waits: a diagnostic, not a test.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any

from paho.mqtt import client as mqtt

WAIT = 0.7  # for deliveries on loopback


class Probe:
    """One paho client with its own network thread, remembering what arrived."""

    def __init__(
        self,
        target: tuple[int, str | None, str | None],
        client_id: str | None = None,
        clean: bool = True,
        will: tuple[str, bytes, int, bool] | None = None,
    ) -> None:
        self.port, username, password = target
        self.client_id = client_id if client_id is not None else f"probe-{uuid.uuid4().hex[:8]}"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=clean,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(*will)
        self.messages: list[tuple[str, bytes, bool, int]] = []
        self.subacks: list[list[int]] = []
        self.drops: list[str] = []
        self.connack: Any = None
        self._connected = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain, m.qos))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.append([c.value for c in codes])
        self.client.on_disconnect = lambda c, u, f, rc, p: self.drops.append(str(rc))

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connack = (str(reason_code), flags.session_present)
        self._connected.set()

    def connect(self) -> Any:
        try:
            self.client.connect("127.0.0.1", self.port, 30)
        except OSError as e:
            return f"connect failed: {e}"
        self.client.loop_start()
        self._connected.wait(3)
        return self.connack

    def subscribe(self, topic_filter: str, qos: int = 1) -> Any:
        before = len(self.subacks)
        self.client.subscribe(topic_filter, qos)
        deadline = time.monotonic() + 3
        while len(self.subacks) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.subacks[-1] if len(self.subacks) > before else "no SUBACK within 3 s"

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> bool:
        info = self.client.publish(topic, payload, qos, retain)
        try:
            info.wait_for_publish(3)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def main(argv: list[str]) -> None:
    target = (int(argv[1]), argv[2] if len(argv) > 2 else None, argv[3] if len(argv) > 3 else None)
    prefix = f"probe{uuid.uuid4().hex[:6]}"

    def client(**kwargs: Any) -> Probe:
        probe = Probe(target, **kwargs)
        probe.connect()
        return probe

    def seen(filter_: str, qos: int = 1) -> tuple[Any, list[Any]]:
        probe = client()
        granted = probe.subscribe(filter_, qos)
        time.sleep(WAIT)
        probe.stop()
        return granted, probe.messages

    publisher = client()
    print("== retained: exact topic, +, #")
    publisher.publish(f"{prefix}/r/x/Presence", b"R1", retain=True)
    time.sleep(WAIT)
    for filter_ in (f"{prefix}/r/x/Presence", f"{prefix}/r/+/Presence", f"{prefix}/#"):
        print(f"  {filter_}: {seen(filter_)}")
    publisher.publish(f"{prefix}/r/x/Presence", b"", retain=True)

    print("== QoS 2")
    subscriber = client()
    print("  SUBACK for QoS 2:", subscriber.subscribe(f"{prefix}/q2", 2))
    sender = client()
    print("  QoS 2 publish acknowledged:", sender.publish(f"{prefix}/q2", b"x", 2), "drops:", sender.drops)
    time.sleep(WAIT)
    print("  delivered:", subscriber.messages)
    sender.stop()
    subscriber.stop()

    print("== will (connection dropped without DISCONNECT)")
    watcher = client()
    watcher.subscribe(f"{prefix}/will/#")
    dying = client(will=(f"{prefix}/will/x", b"gone", 1, True))
    dying.client.socket().close()
    time.sleep(1.5)
    dying.client.loop_stop()
    print("  delivered:", watcher.messages, "retained afterwards:", seen(f"{prefix}/will/x")[1])
    watcher.stop()
    publisher.publish(f"{prefix}/will/x", b"", retain=True)

    print("== persistent session")
    session_id = f"session-{prefix}"
    away = client(client_id=session_id, clean=False)
    away.subscribe(f"{prefix}/session")
    away.stop()
    publisher.publish(f"{prefix}/session", b"queued")
    back = client(client_id=session_id, clean=False)
    time.sleep(WAIT)
    print("  CONNACK (reason, session present):", back.connack, "delivered:", back.messages)
    back.stop()
    client(client_id=session_id, clean=True).stop()  # the broker forgets the session

    print("== client ids")
    for client_id in ("", "a" * 24, "a" * 1000, "with space", "dot.ted", "sl/ash", "star*", "ünï", "$dollar"):
        probe = Probe(target, client_id=client_id)
        print(f"  {client_id[:20]!r} ({len(client_id)}): {probe.connect()}")
        probe.stop()

    print("== $ topics and shared subscriptions")
    everything = client()
    everything.subscribe("#")
    publisher.publish(f"$probe/{prefix}", b"d")
    time.sleep(WAIT)
    print(
        "  # receives $ topics:", sorted({m[0].split("/")[0] for m in everything.messages if m[0][0] == "$"})
    )
    everything.stop()
    print("  $SYS/# messages within 1 s:", len(seen("$SYS/#")[1]))
    shared = client()
    print("  $share SUBACK:", shared.subscribe(f"$share/g/{prefix}/shared"))
    publisher.publish(f"{prefix}/shared", b"s")
    time.sleep(WAIT)
    print("  delivered:", shared.messages)
    shared.stop()

    print("== topic characters")
    levels = client()
    levels.subscribe(f"{prefix}/t/#")
    for level in ("dot.ted", "sp ace", "star*", "gt>", "ünï", "tab\tx"):
        sender = client()
        acknowledged = sender.publish(f"{prefix}/t/{level}", b"t")
        time.sleep(WAIT)
        arrived = [m[0] for m in levels.messages if m[1] == b"t"]
        levels.messages.clear()
        print(f"  {level!r}: acknowledged {acknowledged}, arrived as {arrived}, drops {sender.drops}")
        sender.stop()
    levels.stop()
    for filter_ in (f"{prefix}/t/dot.ted", f"{prefix}/t/sp ace", f"{prefix}/t/star*"):
        print(f"  SUBACK for {filter_!r}: {seen(filter_)[0]}")

    print("== a 4 MB payload")
    large = client()
    large.subscribe(f"{prefix}/big")
    print("  acknowledged:", publisher.publish(f"{prefix}/big", b"x" * 4 * 1024 * 1024))
    time.sleep(1.0)
    print("  delivered sizes:", [len(m[1]) for m in large.messages])
    large.stop()
    publisher.stop()


if __name__ == "__main__":
    main(sys.argv)
