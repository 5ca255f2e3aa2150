"""One charge point flooded with commands through the gateway's shared MQTT session (issue 9, item 14).

A private Mosquitto with its default limits (``max_queued_messages 1000`` and
``max_inflight_messages 20`` per client: the gateway's one session carries every charge point's
commands), the gateway (``twistd -n ocppgw``) and two charge points, FLOOD and OTHER, both answering
every Call at once. A raw MQTT publisher writes ``--flood`` QoS 1 commands for FLOOD in one go, then
``--other`` commands for OTHER while the gateway is still working through the flood. Prints one JSON
object: what reached each charge point, how long the gateway took, and what the broker logged about
dropping. ``--broker-option`` adds mosquitto.conf lines (e.g. ``max_queued_messages 0``) to compare.

    .venv/bin/python bench/downstream_flood.py [--flood 15000] [--other 200] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from typing import Any

from websockets.asyncio.client import connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common


def _string(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def _packet(first: int, body: bytes) -> bytes:
    size, out = len(body), bytearray((first,))
    while True:
        size, byte = divmod(size, 128)
        out.append(byte | 0x80 if size else byte)
        if not size:
            return bytes(out) + body


def _command(cid: str, unique_id: str, mid: int) -> bytes:
    payload = json.dumps(
        {"MessageTypeId": 2, "UniqueId": unique_id, "Action": "ClearCache", "Payload": {}}
    ).encode()
    return _packet(0x32, _string(f"ocpp/cs/{cid}".encode()) + mid.to_bytes(2, "big") + payload)


class Publisher:
    """A blocking MQTT 3.1.1 client that writes many QoS 1 PUBLISH packets at once."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _string(b"MQTT") + b"\x04\x02\x00\x3c" + _string(f"flood-{os.getpid()}".encode())
        self.sock.sendall(_packet(0x10, body))
        self.sock.recv(4)  # CONNACK
        self.mid = 0

    def publish(self, cid: str, ids: list[str]) -> None:
        packets = []
        for unique_id in ids:
            self.mid = self.mid % 65535 + 1
            packets.append(_command(cid, unique_id, self.mid))
        self.sock.sendall(b"".join(packets))

    def close(self) -> None:
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


class ChargePoint:
    """Answers every Call at once and records its UniqueIds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received: list[str] = []
        self.last = 0.0
        self.ws: Any = None

    async def open(self) -> None:
        self.ws = await connect(self.url, subprotocols=["ocpp1.6"], max_size=None)
        self.task = asyncio.create_task(self.serve())

    async def serve(self) -> None:
        try:
            async for text in self.ws:
                frame = json.loads(text)
                if frame[0] == 2:
                    self.received.append(frame[1])
                    self.last = time.monotonic()
                    await self.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
        except Exception:
            pass


async def run(args: argparse.Namespace, gateway: common.Gateway, broker_port: int) -> dict[str, Any]:
    base = f"ws://127.0.0.1:{gateway.port}/ocpp/"
    flood, other = ChargePoint(base + "FLOOD"), ChargePoint(base + "OTHER")
    await flood.open()
    await other.open()
    await asyncio.sleep(1.0)  # subscriptions in place
    publisher = Publisher(broker_port)
    flood_ids = [f"f{n}" for n in range(args.flood)]
    other_ids = [f"o{n}" for n in range(args.other)]
    started = time.monotonic()
    publisher.publish("FLOOD", flood_ids)
    flood_sent = time.monotonic()
    await asyncio.sleep(args.other_after)
    for n in range(0, len(other_ids), 10):  # OTHER's commands in small groups during the flood
        publisher.publish("OTHER", other_ids[n : n + 10])
        await asyncio.sleep(0.01)
    other_sent = time.monotonic()
    deadline = time.monotonic() + args.wait
    quiet_since = time.monotonic()
    seen = (0, 0)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = (len(flood.received), len(other.received))
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since > 3.0 and len(other.received) >= len(other_ids):
            break
    publisher.close()
    missing = sorted(set(other_ids) - set(other.received), key=lambda u: int(u[1:]))
    return {
        "flood_published": args.flood,
        "flood_delivered": len(flood.received),
        "other_published": args.other,
        "other_delivered": len(set(other.received)),
        "other_missing_first": missing[:10],
        "flood_write_s": round(flood_sent - started, 3),
        "other_published_during_s": [round(args.other_after, 3), round(other_sent - started, 3)],
        "last_flood_delivery_s": round(flood.last - started, 3) if flood.last else None,
        "last_other_delivery_s": round(other.last - started, 3) if other.last else None,
    }


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    broker = common.Broker(work, args.broker_option)
    gateway = None
    try:
        broker.start()
        options = common.gateway_options(args.gateway_option)
        gateway = common.Gateway(work, broker.port, options, src=args.gateway_src)
        gateway.start()
        result = asyncio.run(run(args, gateway, broker.port))
        result["gateway_rss_kb"] = common.rss_kb(gateway.pid)
        result["gateway_cpu_s"] = round(common.cpu_seconds(gateway.pid), 2)
    finally:
        if gateway is not None:
            gateway.stop()
        broker.stop()
    with open(broker.work.file("mosquitto.log"), encoding="utf-8", errors="replace") as f:
        dropping = [line.strip() for line in f if "dropped" in line.lower()]
    result["broker_log_dropping"] = dropping[:5]
    result["broker_options"] = args.broker_option
    result["gateway_options"] = args.gateway_option
    result["target_met"] = result["other_delivered"] == args.other
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood", type=int, default=15000, help="commands published at once to FLOOD")
    parser.add_argument("--other", type=int, default=200, help="commands for OTHER, during the flood")
    parser.add_argument("--other-after", type=float, default=0.05, help="seconds after the flood")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for deliveries at most")
    parser.add_argument("--broker-option", action="append", default=[], metavar="LINE")
    common.add_gateway_option(parser)
    common.add_run_options(parser)
    common.add_gateway_src_option(parser)
    args = parser.parse_args()
    return common.run_benchmark(
        "downstream_flood", args, "ocppgw-bench-flood-", lambda work: measure(args, work)
    )


if __name__ == "__main__":
    sys.exit(main())
