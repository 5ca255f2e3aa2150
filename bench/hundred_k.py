"""100,000 idle charge points on one gateway node with ``[gateway] workers`` (issue 12).

Starts a private Mosquitto, the gateway (``twistd -n ocppgw``) with ``workers = W`` (by default as
many as the open-file limit per process asks: ``ceil(N / (hard limit - --fd-margin))``, 6 for
100,000 under a hard limit of 20,000), ``ping_interval`` 30 s, ``default_heartbeat_interval`` 1h,
``max_conn_rate = infinity`` (the load generators set the pace), the management API on a free port
for ``/metrics``, and ``responder.py``. Once every worker has reached the broker, reads the RSS of the
master and all workers (the baseline). Then ``loadgen.py idle`` processes, at most ``--per-process``
connections each (each process has the same open-file limit) and each from its own loopback source
address (127.0.0.2, 127.0.0.3, ...: one address's ephemeral ports, ``ip_local_port_range``, would
stop at ~28,000), open N connections; each does the WebSocket handshake and one BootNotification
round trip (answered by the responder through MQTT), then stays silent, answering the gateway's pings.

Once all have reported, for ``--duration`` seconds ``/metrics`` is read every second: the worst
``ocppgw_event_loop_lag_max_seconds`` (the worst lag of the last minute; with workers, the master's
``/metrics`` keeps the worst worker's value) read at least 60 s into the window, so that it covers
the idle window only (``--duration`` must exceed 60), and the lag and GC-pause histograms between
the start and the end of the window (summed over the workers). Reported: connections completed (must
be N), time to connect them all, the RSS of master + workers before and after (and per charge point:
target <= 20 KB), each worker's RSS, open descriptors (its share of the connections) and CPU, and
the CPU (cores) the gateway, the load generators, Mosquitto and the responder took while connecting
and while idle. Prints one JSON object.

    .venv/bin/python bench/hundred_k.py --cps 3000 --workers 2 --per-process 1000 --duration 70
    .venv/bin/python bench/hundred_k.py --wait-quiet 300 --out bench/results/hundred_k.json  # 100,000
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

TARGET_KB = 20.0
TARGET_LAG_S = 0.1
LAG_GAUGE_WINDOW_S = 60.0
"""``ocppgw_event_loop_lag_max_seconds`` is the worst of the last minute (``ocppgw.runtime.LagMonitor``):
only readings this long into the idle window leave the connecting phase out."""


def workers_for(cps: int, margin: int) -> int:
    """Gateway processes the open-file limit asks for ``cps`` connections (``margin`` descriptors of
    each kept for the rest, and for the kernel's uneven spread over the ``SO_REUSEPORT`` sockets)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return 1
    return max(1, math.ceil(cps / max(1, hard - margin)))


def per_worker(pids: list[int]) -> list[dict[str, Any]]:
    """Each worker's RSS, open descriptors (its connections, plus a few) and CPU so far."""
    return [
        {
            "pid": pid,
            "rss_kb": common.rss_kb(pid),
            "open_fds": common.open_fds(pid),
            "cpu_s": round(common.cpu_seconds(pid), 2),
        }
        for pid in pids
    ]


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    workers = args.workers or workers_for(args.cps, args.fd_margin)
    procs = math.ceil(args.cps / args.per_process)
    if procs > 250:
        raise SystemExit(f"{procs} load generators: more than 127.0.0.2-127.0.0.251 offer")
    broker = common.Broker(work)
    gateway = responder = None
    clients: list[Any] = []
    try:
        broker.start()
        api_port, options = common.api_options(work)
        options.setdefault("gateway", {}).update(
            {"workers": str(workers), "ping_interval": args.ping_interval, "default_heartbeat_interval": "1h"}
        )
        options["listeners.ws.bench"] = {"max_conn_rate": "infinity"}
        for section, values in common.gateway_options(args.gateway_option).items():
            options.setdefault(section, {}).update(values)
        gateway = common.Gateway(work, broker.port, options, src=args.gateway_src)
        gateway.start(timeout=60 + 5 * workers)
        common.wait_until(lambda: common.port_accepts(api_port), 15, "the management API to listen")
        budget = args.cps / args.rate + args.duration + 300
        responder = common.start_responder(work, broker.port, budget)
        time.sleep(args.settle)
        pids = gateway.pids()
        if len(pids) != (workers + 1 if workers > 1 else 1):
            raise RuntimeError(f"expected {workers} workers under twistd, found processes {pids}")
        rss_before = common.rss_total_kb(pids)
        workers_before = per_worker(pids)

        def groups() -> dict[str, float]:
            assert gateway is not None and broker.process is not None and responder is not None
            return {
                "gateway": gateway.cpu_seconds(),
                **common.group_cpu(
                    {
                        "loadgens": [c.pid for c in clients],
                        "mosquitto": [broker.process.pid],
                        "responder": [responder.pid],
                    }
                ),
            }

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
            label="100k",
            options=["--reply-timeout", "60"],
        )
        cpu_start, busy_start = groups(), common.system_busy_seconds()
        reports = common.read_reports(clients, args.cps / args.rate + 240, "the idle clients to connect")
        connect_s = time.monotonic() - started
        connect_cores = common.cpu_cores(cpu_start, groups(), connect_s)
        connect_busy = (common.system_busy_seconds() - busy_start) / connect_s
        time.sleep(args.settle)
        rss_after = common.rss_total_kb(pids)
        loadgen_rss = common.rss_total_kb([c.pid for c in clients])
        broker_rss = common.rss_kb(broker.process.pid) if broker.process else None
        before = common.scrape_metrics(api_port)
        cpu_before, busy_before = groups(), common.system_busy_seconds()
        worst: float | None = None
        worst_any = 0.0  # including the end of the connecting phase
        window_start = time.monotonic()
        while time.monotonic() - window_start < args.duration:
            time.sleep(1.0)
            lag = common.scrape_metrics(api_port).get(("ocppgw_event_loop_lag_max_seconds", ()), 0.0)
            worst_any = max(worst_any, lag)
            if time.monotonic() - window_start >= LAG_GAUGE_WINDOW_S:
                worst = lag if worst is None else max(worst, lag)
        window = time.monotonic() - window_start
        after = common.scrape_metrics(api_port)
        idle_cores = common.cpu_cores(cpu_before, groups(), window)
        idle_busy = (common.system_busy_seconds() - busy_before) / window
        rss_end = common.rss_total_kb(pids)
        workers_after = per_worker(pids)
        alive = gateway.process is not None and gateway.process.poll() is None and pids == gateway.pids()
    finally:
        for client in clients:
            common.stop(client)
        common.stop(responder)
        if gateway is not None:
            gateway.stop()
        broker.stop()
    opened = sum(r["opened"] for r in reports)
    connected_end = after.get(("ocppgw_connected_charge_points", ()))
    per_cp = rss_after / opened if opened else None
    gc_pauses = {
        generation: common.histogram_delta(before, after, "ocppgw_gc_pause_seconds", generation=generation)
        for generation in ("0", "1", "2")
    }
    return {
        "cps": args.cps,
        "workers": workers,
        "nofile_limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "client_procs": len(reports),
        "client_sources": [common.source_address(i) for i in range(len(reports))],
        "rate_per_s": args.rate,
        "ping_interval": args.ping_interval,
        "opened": opened,
        "failures": common.merged_failures(reports),
        "connected_at_window_end": connected_end,
        "connect_all_s": round(connect_s, 2),
        "connect_cpu_cores": connect_cores,
        "connect_busy_cores": round(connect_busy, 3),
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "rss_window_end_kb": rss_end,
        "kb_per_cp": None if per_cp is None else round(per_cp, 2),
        "kb_per_cp_above_baseline": round((rss_after - rss_before) / opened, 2) if opened else None,
        "loadgen_rss_kb": loadgen_rss,
        "mosquitto_rss_kb": broker_rss,
        "per_process_before": workers_before,
        "per_process_after": workers_after,
        "window_s": round(window, 1),
        "worst_event_loop_lag_s": None if worst is None else round(worst, 4),
        "worst_event_loop_lag_incl_connecting_s": round(worst_any, 4),
        "event_loop_lag": common.histogram_delta(before, after, "ocppgw_event_loop_lag_seconds"),
        "gc_pauses": gc_pauses,
        "idle_cpu_cores": idle_cores,
        "idle_busy_cores": round(idle_busy, 3),
        "gateway_options": args.gateway_option,
        "gateway_alive": alive,
        "target_kb_per_cp": TARGET_KB,
        "target_worst_lag_s": TARGET_LAG_S,
        "target_met": bool(
            alive
            and opened == args.cps
            and connected_end == args.cps
            and per_cp is not None
            and per_cp <= TARGET_KB
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cps", type=int, default=100000, help="idle charge points (connections)")
    parser.add_argument(
        "--workers", type=int, default=0, help="[gateway] workers (0: as the open-file limit asks)"
    )
    parser.add_argument(
        "--fd-margin",
        type=int,
        default=2000,
        help="descriptors per gateway process not counted for connections when choosing the workers",
    )
    parser.add_argument(
        "--per-process", type=int, default=18000, help="connections per load generator at most"
    )
    parser.add_argument("--rate", type=float, default=500.0, help="connections opened per second, in all")
    parser.add_argument("--concurrency", type=int, default=300, help="handshakes in progress at most, in all")
    parser.add_argument("--ping-interval", default="30s", help="the gateway's [gateway] ping_interval")
    parser.add_argument("--duration", type=float, default=95.0, help="idle seconds measured (> 60)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before each RSS reading")
    common.add_gateway_option(parser)
    common.add_gateway_src_option(parser)
    common.add_run_options(parser)
    args = parser.parse_args()
    return common.run_benchmark("hundred_k", args, "ocppgw-bench-100k-", lambda work: measure(args, work))


if __name__ == "__main__":
    sys.exit(main())
