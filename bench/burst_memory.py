"""Gateway memory through a burst of large frames: before, at peak, and after (issue 9, item 5).

A private Mosquitto and the gateway (``twistd -n ocppgw``, ``max_frame_size`` 1MB). ``--cps``
WebSocket connections are opened (at most ``--concurrency`` handshakes at a time), then every one
sends one DataTransfer Call of ``--frame-kb`` KB at the same moment and closes once it is sent and
the gateway has had ``--linger`` seconds with it. The gateway's VmRSS is read before the burst
(connections open, idle), sampled every 20 ms during it (the peak), and ``--after`` seconds after
the last connection closed. Connections closed with 1009 (``max_inflight_bytes``) are counted.
Prints one JSON object; the target is RSS after <= 1.5 x before.

    .venv/bin/python bench/burst_memory.py [--cps 1000] [--frame-kb 900] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from typing import Any

from websockets.asyncio.client import connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common


class Sampler(threading.Thread):
    """VmRSS of one process every 20 ms; keeps the highest."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, common.rss_kb(self.pid))
            time.sleep(0.02)


async def burst(args: argparse.Namespace, url: str, pid: int) -> dict[str, Any]:
    limit = asyncio.Semaphore(args.concurrency)

    async def open_one(n: int) -> Any:
        async with limit:
            try:
                return await connect(f"{url}B{n}", subprotocols=["ocpp1.6"], open_timeout=30, max_size=None)
            except Exception:
                return None

    sockets = [s for s in await asyncio.gather(*(open_one(n) for n in range(args.cps))) if s is not None]
    await asyncio.sleep(2.0)
    before = common.rss_kb(pid)
    data = "x" * (args.frame_kb * 1024 - 80)
    outcome = {"sent": 0, "closed_1009": 0, "failed": 0}

    async def send_one(ws: Any, n: int) -> None:
        frame = json.dumps([2, f"b{n}", "DataTransfer", {"vendorId": "bench", "data": data}])
        try:
            await ws.send(frame)
            outcome["sent"] += 1
            await asyncio.sleep(args.linger)
            await ws.close()
        except Exception:
            pass
        if ws.close_code == 1009:
            outcome["closed_1009"] += 1
        elif ws.close_code not in (1000, None):
            outcome["failed"] += 1

    sampler = Sampler(pid)
    sampler.start()
    started = time.monotonic()
    await asyncio.gather(*(send_one(ws, n) for n, ws in enumerate(sockets)))
    done = time.monotonic()
    await asyncio.sleep(args.after)
    sampler.running = False
    after = common.rss_kb(pid)
    return {
        "connections": len(sockets),
        **outcome,
        "burst_s": round(done - started, 2),
        "rss_before_kb": before,
        "rss_peak_kb": max(sampler.peak, after),
        "rss_after_kb": after,
        "after_s": args.after,
        "after_to_before": round(after / before, 2) if before else None,
        "peak_to_data": round((max(sampler.peak, after) - before) / (len(sockets) * args.frame_kb), 3),
    }


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    broker = common.Broker(work)
    gateway = None
    options = {
        "gateway": {"max_frame_size": "1MB", "ping_interval": "1h", "default_heartbeat_interval": "1h"}
    }
    for section, values in common.gateway_options(args.gateway_option).items():
        options.setdefault(section, {}).update(values)
    try:
        broker.start()
        gateway = common.Gateway(work, broker.port, options, src=args.gateway_src)
        gateway.start()
        result = asyncio.run(burst(args, f"ws://127.0.0.1:{gateway.port}/ocpp/", gateway.pid))
    finally:
        if gateway is not None:
            gateway.stop()
        broker.stop()
    result.update(cps=args.cps, frame_kb=args.frame_kb, gateway_options=args.gateway_option)
    result["target_met"] = result["after_to_before"] is not None and result["after_to_before"] <= 1.5
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cps", type=int, default=1000, help="connections, each sending one frame")
    parser.add_argument("--frame-kb", type=int, default=900)
    parser.add_argument("--concurrency", type=int, default=100, help="handshakes at a time")
    parser.add_argument("--linger", type=float, default=1.0, help="seconds a connection stays after sending")
    parser.add_argument("--after", type=float, default=10.0, help="seconds after the burst to read RSS")
    common.add_gateway_option(parser)
    common.add_run_options(parser)
    common.add_gateway_src_option(parser)
    args = parser.parse_args()
    common.raise_nofile()
    return common.run_benchmark("burst_memory", args, "ocppgw-bench-burst-", lambda work: measure(args, work))


if __name__ == "__main__":
    sys.exit(main())
