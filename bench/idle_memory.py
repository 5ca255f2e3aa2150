"""Memory per idle charge point: RSS of the gateway before and after N idle connections.

Starts a private Mosquitto, the gateway (``twistd -n ocppgw`` with a generated
gw.ini: ping_interval and default_heartbeat_interval 1h, so neither pings nor
liveness checks happen during the run) and ``responder.py``.  Reads the
gateway's VmRSS, then ``loadgen.py idle`` processes open N WebSocket connections
at a bounded rate, each with its own charge point id and subprotocol ocpp1.6;
each sends one BootNotification and waits for its CallResult (which comes back
through the charge point's MQTT subscription, so the session is fully set up),
then stays silent.  Once all are open and the gateway has settled, VmRSS is read
again.  Prints one JSON object.

    .venv/bin/python bench/idle_memory.py [--cps 10000] [--out bench/results/idle_memory.json]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common


def measure(args: argparse.Namespace, work: common.Workdir, src: str = common.REPO) -> dict[str, Any]:
    """One gateway, from source tree ``src``, with ``args.cps`` idle connections."""
    broker = common.Broker(work)
    gateway = responder = None
    try:
        broker.start()
        gateway = common.Gateway(
            work,
            broker.port,
            {"gateway": {"ping_interval": args.ping_interval, "default_heartbeat_interval": "1h"}},
            src=src,
        )
        gateway.start()
        limit = open(f"/proc/{gateway.pid}/limits", encoding="ascii").read()
        nofile = next(line.split()[3:5] for line in limit.splitlines() if line.startswith("Max open files"))
        responder = common.start_responder(work, broker.port, args.cps / args.rate + 240)
        idle = common.idle_connections(
            work,
            gateway,
            f"ws://127.0.0.1:{gateway.port}/ocpp/",
            count=args.cps,
            rate=args.rate,
            concurrency=args.concurrency,
            procs=args.client_procs,
            settle=args.settle,
        )
    finally:
        common.stop(responder)
        if gateway is not None:
            gateway.stop()
        broker.stop()
    per = idle["kb_per_connection"]
    result = {"cps": args.cps, **idle, "gateway_nofile_limit": [int(v) for v in nofile]}
    result["target_kb_per_connection"] = 30
    result["target_met"] = per is not None and per < 30 and idle["opened"] == args.cps
    result["ping_interval"] = args.ping_interval
    return result


def add_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """This benchmark's own options; ``compare_trees.py`` takes them with ``prefix`` ``idle-`` (its
    ``--cps`` is the closed loop's)."""
    parser.add_argument(f"--{prefix}cps", type=int, default=10000, help="idle charge points (connections)")
    parser.add_argument(
        f"--{prefix}rate",
        type=float,
        default=500.0,
        help="connections opened per second at most, in all (the gateway's default max_conn_rate is 1000)",
    )
    parser.add_argument(
        f"--{prefix}concurrency", type=int, default=200, help="handshakes in progress at most, in all"
    )
    parser.add_argument(f"--{prefix}client-procs", type=int, default=2, help="client processes")
    parser.add_argument(
        f"--{prefix}settle", type=float, default=3.0, help="seconds to wait before each RSS reading"
    )
    parser.add_argument(
        f"--{prefix}ping-interval", default="1h", help="the gateway's [gateway] ping_interval"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser)
    common.add_gateway_src_option(parser)
    common.add_run_options(parser)
    args = parser.parse_args()
    return common.run_benchmark(
        "idle_memory", args, "ocppgw-bench-idle-", lambda work: measure(args, work, args.gateway_src)
    )


if __name__ == "__main__":
    sys.exit(main())
