"""Two checkouts of the gateway in one run: closed-loop ratio and idle memory per connection.

``--before DIR`` and ``--after DIR`` are source trees (a worktree of another commit, say); each
gateway runs from its own tree (``common.gateway_env``: the tree first on PYTHONPATH and the
working directory, checked with ``common.gateway_source``), under the same interpreter and
dependencies, started through twistd as ``closed_loop.py`` and ``idle_memory.py`` start it, so the
trees may lay out ``ocppgw`` differently.

Closed loop: both gateway stacks (each its own Mosquitto and responder) and one bare Autobahn
server are started once; then ``--rounds`` rounds, each of four back-to-back runs: one gateway,
the bare server, the other gateway, the bare server (before first in even rounds, after first in
odd ones, so that a drift in machine speed weighs on both alike).  Each gateway run is paired
with the bare run right after it.  Per tree, what ``closed_loop.py`` reports (medians, every
round, the ratio of the medians and the median of the pair ratios); then after minus before of
both ratios and of each round's pair ratios, and the check ``after >= before - 0.03`` on the
median pair ratios.

Idle memory: ``--idle-rounds`` times each, alternating (before, after, after, before, ...), a fresh
Mosquitto, gateway and responder and ``--idle-cps`` idle connections, measured as
``idle_memory.py`` does; per tree the median KB per connection, and after minus before.

Prints one JSON object.

    .venv/bin/python bench/compare_trees.py --before ../baseline --after . [--rounds 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import closed_loop
import common
import idle_memory

TREES = ("before", "after")
RATIO_TOLERANCE = 0.03  # issue 8: the ratio after is at least the ratio before minus this


def orders(rounds: int) -> list[tuple[str, ...]]:
    """Which tree goes first in each round: before, after, then after, before, and so on."""
    return [TREES if i % 2 == 0 else TREES[::-1] for i in range(rounds)]


def difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else round(after - before, 3)


def closed_loop_phase(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    """Both gateway stacks and the bare server for the whole phase; each gateway run followed by a
    bare run, its pair."""
    stacks = {
        tree: closed_loop.GatewayStack(args, common.Workdir(f"{tree}-", True, work), getattr(args, tree))
        for tree in TREES
    }
    bare = closed_loop.BareStack(args, work)
    gateway_rounds: dict[str, list[dict[str, Any]]] = {tree: [] for tree in TREES}
    bare_rounds: dict[str, list[dict[str, Any]]] = {tree: [] for tree in TREES}
    try:
        children_lifetime = closed_loop.lifetime(args, 4 * args.rounds)
        for stack in [*stacks.values(), bare]:
            stack.start(children_lifetime)
        for i, order in enumerate(orders(args.rounds)):
            for tree in order:
                gateway_rounds[tree].append(stacks[tree].run(f"{tree}{i}-"))
                bare_rounds[tree].append(bare.run(f"bare-{tree}{i}-"))
    finally:
        for stack in [*stacks.values(), bare]:
            stack.stop()
    per_tree = {tree: closed_loop.ratios(gateway_rounds[tree], bare_rounds[tree]) for tree in TREES}
    before, after = per_tree["before"], per_tree["after"]
    paired = [
        round(a - b, 3)
        for a, b in zip(after["ratio_per_round_pair"], before["ratio_per_round_pair"], strict=False)
    ]
    threshold = None
    if before["ratio_paired_median"] is not None:
        threshold = round(before["ratio_paired_median"] - RATIO_TOLERANCE, 3)
    return {
        **closed_loop.settings(args),
        **per_tree,
        "ratio_after_minus_before": difference(
            after["ratio_gateway_to_bare"], before["ratio_gateway_to_bare"]
        ),
        "ratio_paired_median_after_minus_before": difference(
            after["ratio_paired_median"], before["ratio_paired_median"]
        ),
        "ratio_pair_after_minus_before_per_round": paired,
        "ratio_pair_after_minus_before_median": round(common.median(paired), 3) if paired else None,
        # steadier than rates on a machine whose speed drifts
        "gateway_cpu_us_per_call_after_minus_before": difference(
            after["gateway"]["cpu_us_per_call"]["gateway"], before["gateway"]["cpu_us_per_call"]["gateway"]
        ),
        "target": f"ratio_paired_median after >= before - {RATIO_TOLERANCE}",
        "target_threshold": threshold,
        "target_met": threshold is not None
        and after["ratio_paired_median"] is not None
        and after["ratio_paired_median"] >= threshold,
    }


def idle_memory_phase(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    """Each tree's gateway, fresh each time, under the same idle connections, alternating."""
    options = argparse.Namespace(
        **{
            name.removeprefix("idle_"): value
            for name, value in vars(args).items()
            if name.startswith("idle_")
        }
    )
    runs: dict[str, list[dict[str, Any]]] = {tree: [] for tree in TREES}
    for i, order in enumerate(orders(args.idle_rounds)):
        for tree in order:
            sub = common.Workdir(f"idle-{tree}{i}-", True, work)
            runs[tree].append(idle_memory.measure(options, sub, getattr(args, tree)))
    per_tree = {}
    for tree in TREES:
        figures = [r["kb_per_connection"] for r in runs[tree] if r["kb_per_connection"] is not None]
        per_tree[tree] = {
            "kb_per_connection": round(common.median(figures), 2) if figures else None,
            "all_opened": all(r["opened"] == args.idle_cps for r in runs[tree]),
            "rounds": runs[tree],
        }
    before, after = per_tree["before"]["kb_per_connection"], per_tree["after"]["kb_per_connection"]
    return {
        "cps": args.idle_cps,
        "rounds": args.idle_rounds,
        **per_tree,
        "kb_per_connection_after_minus_before": difference(after, before),
        "target": "kb_per_connection after <= before",
        "target_met": before is not None and after is not None and after <= before,
    }


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    """The phases asked for (``--rounds 0`` or ``--idle-rounds 0`` skips one)."""
    result: dict[str, Any] = {}
    if args.rounds > 0:
        result["closed_loop"] = closed_loop_phase(args, work)
    if args.idle_rounds > 0:
        result["idle_memory"] = idle_memory_phase(args, work)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, metavar="DIR", help="source tree of the gateway before")
    parser.add_argument("--after", default=common.REPO, metavar="DIR", help="after (default: this checkout)")
    closed_loop.add_options(parser)
    parser.add_argument(
        "--idle-rounds", type=int, default=2, help="idle memory measurements per tree (0: skip the phase)"
    )
    idle_memory.add_options(parser, prefix="idle-")
    args = parser.parse_args()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    # checked before any waiting: each tree's gateway must import its own ocppgw
    trees = {tree: common.gateway_source(getattr(args, tree)) for tree in TREES}
    return common.run_benchmark(
        "compare_trees", args, "ocppgw-bench-compare-", lambda work: {"trees": trees, **measure(args, work)}
    )


if __name__ == "__main__":
    sys.exit(main())
