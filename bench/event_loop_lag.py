"""The gateway's worst event-loop lag with N idle charge points and WebSocket pings (issue 12).

Starts a private Mosquitto, the gateway (``twistd -n ocppgw``, the management API on a free port
with a viewer API key so that ``/metrics`` can be read, ``default_heartbeat_interval`` 1h, the ping
interval from ``--ping-interval``) and ``responder.py``. ``loadgen.py idle`` processes (each from its
own loopback source address, each under the open-file limit) open N connections, each with one
BootNotification round trip, and hold them. Then for ``--duration`` seconds the benchmark reads
``/metrics`` every second: ``ocppgw_event_loop_lag_max_seconds`` (the worst lag of the last minute,
from a timer due every 50 ms in the gateway) gives the worst stall; the lag and garbage-collection
histograms are compared between the start and the end of that window. Prints one JSON object.

Every connection is pinged once per ``--ping-interval``; a shorter interval than the default 30 s
compresses time (more pings per second: a harsher test than production), so the window holds
several rounds of pings and of the collections they cause.

    .venv/bin/python bench/event_loop_lag.py --cps 2000 --duration 30 --ping-interval 10s
    .venv/bin/python bench/event_loop_lag.py --out bench/results/event_loop_lag.json  # 20,000; 30 s pings
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

PER_PROCESS = 9000
"""Connections per load generator process at most (the open-file limit is 20,000 per process)."""


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    broker = common.Broker(work)
    gateway = responder = None
    clients: list[Any] = []
    try:
        broker.start()
        api_port, options = common.api_options(work)
        options.setdefault("gateway", {}).update(
            {"ping_interval": args.ping_interval, "default_heartbeat_interval": "1h"}
        )
        options["listeners.ws.bench"] = {"max_conn_rate": "infinity"}
        for section, values in common.gateway_options(args.gateway_option).items():
            options.setdefault(section, {}).update(values)
        gateway = common.Gateway(work, broker.port, options, src=args.gateway_src)
        gateway.start()
        common.wait_until(lambda: common.port_accepts(api_port), 15, "the management API to listen")
        budget = args.cps / args.rate + args.duration + 240
        responder = common.start_responder(work, broker.port, budget)
        procs = args.client_procs or math.ceil(args.cps / PER_PROCESS)
        started = time.monotonic()
        clients = common.start_loadgens(
            work,
            "idle",
            f"ws://127.0.0.1:{gateway.port}/ocpp/",
            count=args.cps,
            procs=procs,
            rate=args.rate,
            concurrency=args.concurrency,
            hold=budget,
            label="lag",
        )
        reports = common.read_reports(clients, args.cps / args.rate + 180, "the idle clients to connect")
        open_seconds = time.monotonic() - started
        time.sleep(args.settle)
        before = common.scrape_metrics(api_port)
        cpu_before = gateway.cpu_seconds()
        worst = 0.0
        window_start = time.monotonic()
        while time.monotonic() - window_start < args.duration:
            time.sleep(1.0)
            scraped = common.scrape_metrics(api_port)
            worst = max(worst, scraped.get(("ocppgw_event_loop_lag_max_seconds", ()), 0.0))
        after = common.scrape_metrics(api_port)
        cpu = gateway.cpu_seconds() - cpu_before
        rss = common.rss_total_kb(gateway.pids())
        alive = gateway.process is not None and gateway.process.poll() is None
    finally:
        for client in clients:
            common.stop(client)
        common.stop(responder)
        if gateway is not None:
            gateway.stop()
        broker.stop()
    opened = sum(r["opened"] for r in reports)
    gc_pauses = {
        generation: common.histogram_delta(before, after, "ocppgw_gc_pause_seconds", generation=generation)
        for generation in ("0", "1", "2")
    }
    return {
        "cps": args.cps,
        "opened": opened,
        "failures": common.merged_failures(reports),
        "open_seconds": round(open_seconds, 2),
        "client_procs": len(reports),
        "ping_interval": args.ping_interval,
        "window_s": args.duration,
        "worst_event_loop_lag_s": round(worst, 4),
        "event_loop_lag": common.histogram_delta(before, after, "ocppgw_event_loop_lag_seconds"),
        "gc_pauses": gc_pauses,
        "gateway_cpu_s_in_window": round(cpu, 2),
        "gateway_rss_kb": rss,
        "gateway_alive": alive,
        "target_worst_lag_s": 0.1,
        "target_met": alive and opened == args.cps and worst <= 0.1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cps", type=int, default=20000, help="idle charge points (connections)")
    parser.add_argument("--rate", type=float, default=1000.0, help="connections opened per second, in all")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in progress at most, in all")
    parser.add_argument("--client-procs", type=int, default=0, help="load generators (0: one per 9,000)")
    parser.add_argument("--ping-interval", default="30s", help="the gateway's [gateway] ping_interval")
    parser.add_argument("--duration", type=float, default=95.0, help="seconds measured once all are open")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between opening and measuring")
    common.add_gateway_option(parser)
    common.add_gateway_src_option(parser)
    common.add_run_options(parser)
    args = parser.parse_args()
    return common.run_benchmark(
        "event_loop_lag", args, "ocppgw-bench-lag-", lambda work: measure(args, work)
    )


if __name__ == "__main__":
    sys.exit(main())
