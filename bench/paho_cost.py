"""What paho-mqtt alone costs per gateway call: no network, no reactor, no ocppgw.

Per call the gateway's MQTT client publishes the upstream Call (QoS 1) and reads its
PUBACK, then reads the central system's reply (a QoS 1 PUBLISH) and writes its
PUBACK.  This drives a paho client through exactly that, 100 calls per batch
like 100 charge points, over an in-memory socket wrapped in the gateway's
``BufferedSocket``, and prints one JSON object with the CPU time per call: for
paho's own ``Client`` and for the gateway's ``BufferingClient`` (its short path
for PUBACK, QoS 0/1 PUBLISH in and QoS 1 PUBLISH out, with the raw callbacks the
reactor link uses), in the same run.
It pokes paho's private state (``_sock``, ``_state``) to skip the CONNECT: a
measuring tool, not product code.

    .venv/bin/python bench/paho_cost.py [--calls 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from paho.mqtt import client as mqtt

from ocppgw.mqtt.paho_client import BufferedSocket, BufferingClient, remaining_length

PAYLOAD = b'{"MessageTypeId":3,"UniqueId":"12345678","Payload":{"currentTime":"2026-11-24T20:00:00.000Z"}}'


class MemorySocket:
    """Bytes the broker "sent" wait in ``incoming``; what paho writes is dropped."""

    def __init__(self) -> None:
        self.incoming = bytearray()

    def recv(self, size: int) -> bytes:
        if not self.incoming:
            raise BlockingIOError
        data = bytes(self.incoming[:size])
        del self.incoming[:size]
        return data

    def send(self, data: bytes) -> int:
        return len(data)

    def close(self) -> None:
        pass


def _publish_packet(topic: str, mid: int) -> bytes:
    encoded = topic.encode()
    body = struct.pack("!H", len(encoded)) + encoded + struct.pack("!H", mid) + PAYLOAD
    return b"\x32" + remaining_length(len(body)) + body


def measure(client_class: type[mqtt.Client], calls: int, batch: int = 100) -> float:
    """CPU seconds per call."""
    received = [0]
    client = client_class(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="cost", protocol=mqtt.MQTTv311
    )
    client.on_message = lambda *_: received.__setitem__(0, received[0] + 1)
    client.on_publish = lambda *_: None
    if isinstance(client, BufferingClient):  # as the reactor link sets it up
        client.on_raw_message = client.on_message
        client.on_raw_ack = client.on_publish
    client.on_socket_register_write = lambda *_: None
    client.on_socket_unregister_write = lambda *_: None
    client.max_inflight_messages_set(0)
    raw = MemorySocket()
    sock = BufferedSocket(raw)
    client._sock = sock
    client._state = mqtt._ConnectionState.MQTT_CS_CONNECTED
    started = time.process_time()
    for n in range(calls):
        info = client.publish(f"ocpp/cp/CP{n % batch}", PAYLOAD, 1)
        raw.incoming += b"\x40\x02" + struct.pack("!H", info.mid)
        raw.incoming += _publish_packet(f"ocpp/cs/CP{n % batch}", n % 65535 + 1)
        if n % batch == batch - 1:
            client.loop_write()
            sock.flush()
            while raw.incoming or sock.pending():
                client.loop_read()
            client.loop_write()
            sock.flush()
    cpu = time.process_time() - started
    if received[0] != calls:
        raise RuntimeError(f"paho delivered {received[0]} of {calls} messages")
    return cpu / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=3, help="each client's best round counts")
    args = parser.parse_args()
    measure(BufferingClient, 1000)  # warm-up
    paho = min(measure(mqtt.Client, args.calls) for _ in range(args.rounds))
    gateway = min(measure(BufferingClient, args.calls) for _ in range(args.rounds))
    result = {
        "benchmark": "paho_cost",
        "calls": args.calls,
        "rounds": args.rounds,
        "paho_cpu_us_per_call": round(paho * 1e6, 1),
        "gateway_client_cpu_us_per_call": round(gateway * 1e6, 1),
        "ratio_gateway_client_to_paho": round(gateway / paho, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
