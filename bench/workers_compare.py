"""``[gateway] workers = 2`` against ``workers = 1`` in one run (issue 12): handshakes and calls per second.

Two gateway stacks side by side for the whole run, each its own Mosquitto, gateway and responder
(``closed_loop.GatewayStack``), alike but for ``workers``; both listeners have ``max_conn_rate =
infinity`` (the default 1000/s, split over the workers, would cap the handshakes rather than measure
them). Each of ``--rounds`` rounds measures both set-ups back to back, ``workers = 1`` first in even
rounds and ``workers = 2`` first in odd ones (``compare_trees.orders``), each with:

- a handshake round: ``--handshakes`` plain ws connections from ``--handshake-procs`` ``loadgen.py
  handshakes`` processes, at most ``--concurrency`` in progress, each the opening and closing
  handshake (``tls_edge.handshake_round``: handshakes/s, p50/p99 connect time, gateway CPU per
  handshake over the master and its workers, the load generator's own CPU);
- a closed loop: ``--cps`` charge points each sending a Heartbeat and waiting for its CallResult for
  ``--duration`` seconds (``closed_loop.run_load``: calls/s, p50/p99, CPU of every process).

Per round and set-up, the cores each part took (``/proc/<pid>/stat``): the gateway (master + workers),
the load generator, Mosquitto, the responder, and everything else busy on the machine (``/proc/stat``),
so that the reader sees how much of the second core was left to the gateway's second worker. Per
set-up the medians; ``workers = 2`` over ``workers = 1`` as the ratio of the medians and the median of
each round's pair. Prints one JSON object. Nothing is pinned (``--pin`` would put every worker on one
core).

    .venv/bin/python bench/workers_compare.py --rounds 2 --handshakes 500 --duration 5
    .venv/bin/python bench/workers_compare.py --wait-quiet 300 --out bench/results/workers_compare.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import closed_loop
import common
import compare_trees
import tls_edge

SETUPS = {"before": "workers_1", "after": "workers_2"}  # compare_trees.orders' names -> ours
WORKERS = {"workers_1": 1, "workers_2": 2}
HARNESS = ("loadgen", "mosquitto", "responder")


class WorkersStack(closed_loop.GatewayStack):
    """A gateway stack with ``workers`` processes; what ``tls_edge.handshake_round`` needs of it too."""

    def __init__(self, args: argparse.Namespace, work: common.Workdir, workers: int) -> None:
        options = [
            f"gateway.workers={workers}",
            "listeners.ws.bench.max_conn_rate=infinity",
            "api.enable=false",
        ]
        super().__init__(closed_loop.with_gateway_options(args, options), work, args.gateway_src)

    def url(self, side: str) -> str:
        assert self.gateway is not None
        return f"{side}://127.0.0.1:{self.gateway.port}/ocpp/"

    def loadgen_options(self, side: str) -> list[str]:
        return []

    def handshakes(self, label: str) -> dict[str, Any]:
        """One handshake round, with the cores each part took over it (the load generator's from its
        own report: it is gone when the round ends)."""
        assert self.broker.process is not None and self.gateway is not None
        gateway = self.gateway
        harness = {"mosquitto": [self.broker.process.pid], "responder": [self.responder.pid]}

        def cpu() -> dict[str, float]:
            return {"gateway": gateway.cpu_seconds(), **common.group_cpu(harness)}

        before, busy_before, started = cpu(), common.system_busy_seconds(), time.monotonic()
        result = tls_edge.handshake_round(self, "ws", label)
        wall = time.monotonic() - started
        cores: dict[str, float | None] = dict(common.cpu_cores(before, cpu(), wall))
        client_us = result["client_cpu_us_per_handshake"]
        cores["loadgen"] = None if client_us is None else client_us * result["handshakes"] / 1e6 / wall
        result["cores"] = with_other(cores, (common.system_busy_seconds() - busy_before) / wall)
        return result

    def closed(self, label: str) -> dict[str, Any]:
        """One closed-loop run; its CPU figures grouped as the handshake round's."""
        result = self.run(label)
        by_name = result["cpu_cores"]
        cores = {
            "gateway": sum(v for k, v in by_name.items() if k.startswith("gateway")),
            **{part: sum(v for k, v in by_name.items() if k.startswith(part)) for part in HARNESS},
        }
        ours = sum(cores.values())
        result["cores"] = with_other(cores, ours + result["cpu_cores_other"])
        return result


def with_other(cores: dict[str, float | None], busy: float) -> dict[str, float | None]:
    """The parts' cores, with the harness's sum, what was left of the machine's cores for the gateway
    (all of them minus the harness and other work), and ``other`` (busy cores outside the run)."""
    harness = sum(cores.get(part) or 0.0 for part in HARNESS)
    ours = harness + (cores.get("gateway") or 0.0)
    other = max(0.0, busy - ours)
    out = {name: None if v is None else round(v, 3) for name, v in cores.items()}
    out["harness"] = round(harness, 3)
    out["other"] = round(other, 3)
    out["left_for_gateway"] = round((os.cpu_count() or 1) - harness - other, 3)
    return out


def summary(rounds: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Medians over the rounds of ``key`` and of each part's cores; every round kept."""

    def med(values: list[Any]) -> float | None:
        present = [v for v in values if v is not None]
        return round(common.median(present), 3) if present else None

    parts = rounds[0]["cores"].keys()
    return {
        key: med([r[key] for r in rounds]),
        "p50_ms": med([r["p50_ms"] for r in rounds]),
        "p99_ms": med([r["p99_ms"] for r in rounds]),
        "cores": {part: med([r["cores"][part] for r in rounds]) for part in parts},
        "failures": sum(sum(r.get("failures", r.get("errors", {})).values()) for r in rounds),
        "rounds": rounds,
    }


def compared(one: dict[str, Any], two: dict[str, Any], key: str) -> dict[str, Any]:
    """``workers = 2`` over ``workers = 1``: ratio of the medians and of each round's pair."""
    pairs = [
        round(b[key] / a[key], 3)
        for a, b in zip(one["rounds"], two["rounds"], strict=True)
        if a[key] and b[key] is not None
    ]
    return {
        "ratio_of_medians": round(two[key] / one[key], 3) if one[key] and two[key] is not None else None,
        "ratio_per_round_pair": pairs,
        "ratio_paired_median": round(common.median(pairs), 3) if pairs else None,
    }


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    stacks = {
        name: WorkersStack(args, common.Workdir(f"{name}-", True, work), workers)
        for name, workers in WORKERS.items()
    }
    handshakes: dict[str, list[dict[str, Any]]] = {name: [] for name in WORKERS}
    calls: dict[str, list[dict[str, Any]]] = {name: [] for name in WORKERS}
    order_names = []
    try:
        per_round = 2 * (90 + args.handshakes / 20) + closed_loop.lifetime(args, 2)
        for stack in stacks.values():
            stack.start(args.rounds * per_round + 120)
        for i, order in enumerate(compare_trees.orders(args.rounds)):
            order_names.append([SETUPS[tree] for tree in order])
            for name in order_names[-1]:
                handshakes[name].append(stacks[name].handshakes(f"hs-{name}-{i}"))
                calls[name].append(stacks[name].closed(f"{name}-{i}-"))
    finally:
        for stack in stacks.values():
            stack.stop()
    hs = {name: summary(handshakes[name], "handshakes_per_s") for name in WORKERS}
    loop = {name: summary(calls[name], "calls_per_s") for name in WORKERS}
    return {
        **closed_loop.settings(args),
        "handshakes_per_round": args.handshakes,
        "handshake_concurrency": args.concurrency,
        "handshake_procs": args.handshake_procs,
        "cpus": os.cpu_count(),
        "round_orders": order_names,
        "handshakes": {
            **hs,
            "workers_2_over_1": compared(hs["workers_1"], hs["workers_2"], "handshakes_per_s"),
        },
        "closed_loop": {
            **loop,
            "workers_2_over_1": compared(loop["workers_1"], loop["workers_2"], "calls_per_s"),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    closed_loop.add_options(parser)
    parser.set_defaults(pin=False)
    parser.add_argument("--handshakes", type=int, default=2000, help="connections per handshake round")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in progress at most")
    parser.add_argument("--handshake-procs", type=int, default=1, help="client processes for handshakes")
    common.add_gateway_src_option(parser)
    return closed_loop.run_main("workers_compare", parser, "ocppgw-bench-workers-", measure)


if __name__ == "__main__":
    sys.exit(main())
