"""Round-trip latency of one charge point against Mosquitto with and without Nagle (issue 9, item 15).

One charge point in a closed loop (``loadgen.py closed --count 1``), Heartbeat Calls answered by
``responder.py`` through a private Mosquitto:

    CP -> gateway -> MQTT -> responder -> MQTT -> gateway -> CP

measured for each of four set-ups: the broker with ``set_tcp_nodelay false`` (Mosquitto's default,
as Debian installs it: Nagle's algorithm on) and ``true``, the gateway with ``[mqtt] quickack``
off and on (TCP_QUICKACK re-armed after each read of the broker socket). Each set-up is a fresh
broker, gateway and responder; ``--rounds`` rounds run the four in turn. Prints one JSON object:
per set-up the medians over the rounds of calls/s, p50 and p99 (ms), and every round.

    .venv/bin/python bench/broker_latency.py [--duration 5] [--rounds 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import closed_loop
import common

# name, broker set_tcp_nodelay, gateway [mqtt] quickack, responder --quickack
SETUPS = (
    ("broker_nagle_gateway_plain", "false", "false", False),
    ("broker_nagle_gateway_quickack", "false", "true", False),
    ("broker_nagle_gateway_plain_responder_quickack", "false", "false", True),
    ("broker_nagle_gateway_quickack_responder_quickack", "false", "true", True),
    ("broker_nodelay_gateway_plain", "true", "false", False),
    ("broker_nodelay_gateway_quickack", "true", "true", False),
)


def one(
    args: argparse.Namespace, work: common.Workdir, label: str, nodelay: str, quickack: str, responder: bool
) -> dict[str, Any]:
    """One round of one set-up, on a fresh broker, gateway and responder."""
    run = argparse.Namespace(**vars(args))
    run.cps = 1
    run.loadgen_procs = 1
    run.broker_option = [f"set_tcp_nodelay {nodelay}"]
    run.gateway_option = [f"mqtt.quickack={quickack}"]
    run.responder_extra = ["--quickack"] if responder else []
    stack = closed_loop.GatewayStack(run, common.Workdir(f"{label}-", parent=work), args.gateway_src)
    try:
        stack.start(closed_loop.lifetime(run, 1))
        result = stack.run(label)
    finally:
        stack.stop()
    keep = ("calls_per_s", "calls", "p50_ms", "p99_ms", "max_ms", "errors")
    return {key: result[key] for key in keep}


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in SETUPS}
    for i in range(args.rounds):
        for name, nodelay, quickack, responder in SETUPS:
            rounds[name].append(one(args, work, f"{name}{i}", nodelay, quickack, responder))
    out: dict[str, Any] = {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds}
    for name, results in rounds.items():
        out[name] = {
            key: common.median([r[key] for r in results if r[key] is not None] or [0.0])
            for key in ("calls_per_s", "p50_ms", "p99_ms")
        }
        out[name]["rounds"] = results
    nagle = out["broker_nagle_gateway_quickack"]["p50_ms"]
    out["target_met"] = nagle < 10.0  # no delayed-ACK stall left with Nagle on at the broker
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per round and set-up")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the four set-ups")
    parser.add_argument("--responder-qos", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2)
    common.add_run_options(parser)
    common.add_gateway_src_option(parser)
    args = parser.parse_args()
    args.profile = None
    return common.run_benchmark(
        "broker_latency", args, "ocppgw-bench-latency-", lambda work: measure(args, work)
    )


if __name__ == "__main__":
    sys.exit(main())
