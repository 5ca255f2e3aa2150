"""What paho-mqtt alone costs per gateway call: no network, no reactor, no ocppgw.

Per call the gateway's MQTT client publishes the upstream Call (QoS 1) and reads its
PUBACK, then reads the central system's reply (a QoS 1 PUBLISH) and writes its
PUBACK.  This drives one paho client through exactly that, 100 calls per batch
like 100 charge points, over an in-memory socket wrapped in the gateway's
``_BufferedSocket``, and prints one JSON object with the CPU time per call.
It pokes paho's private state (``_sock``, ``_state``) to skip the CONNECT: a
measuring tool, not product code.

    .venv/bin/python bench/paho_cost.py [--calls 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from paho.mqtt import client as mqtt

from ocppgw.mqtt.reactor_link import _BufferedSocket

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


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _publish_packet(topic: str, mid: int) -> bytes:
    encoded = topic.encode()
    body = struct.pack("!H", len(encoded)) + encoded + struct.pack("!H", mid) + PAYLOAD
    return b"\x32" + _remaining_length(len(body)) + body


def measure(calls: int, batch: int = 100) -> dict[str, Any]:
    received = [0]
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="cost", protocol=mqtt.MQTTv311
    )
    client.on_message = lambda *_: received.__setitem__(0, received[0] + 1)
    client.on_publish = lambda *_: None
    client.on_socket_register_write = lambda *_: None
    client.on_socket_unregister_write = lambda *_: None
    client.max_inflight_messages_set(0)
    raw = MemorySocket()
    sock = _BufferedSocket(raw)
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
    return {"benchmark": "paho_cost", "calls": calls, "paho_cpu_us_per_call": round(cpu / calls * 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50000)
    args = parser.parse_args()
    print(json.dumps(measure(args.calls)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
