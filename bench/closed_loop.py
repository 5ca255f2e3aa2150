"""Closed-loop throughput and latency: ocppgw against a bare Autobahn server, in one run.

Gateway side: a private Mosquitto, the gateway (``twistd -n ocppgw`` with a
generated gw.ini: free loopback port, message_format_checking disable, every
other key at its default) and ``responder.py``, an asyncio MQTT client answering every
Call from MQTT.  N charge points (``loadgen.py closed``, its own process) each
send a Heartbeat Call and wait for its CallResult before the next:

    CP -> gateway -> MQTT ocpp/cp/<cid> -> responder -> MQTT ocpp/cs/<cid> -> gateway -> CP

Bare side: ``bare_server.py``, a Twisted + Autobahn server answering each Call
itself, under the same load generator.

Both stacks are started once; then ``--rounds`` rounds run alternately (gateway,
bare, gateway, ...), so that other work on the machine weighs on both sides alike.
Each round opens N fresh connections, warms up, and measures a fixed window.
Prints one JSON object: per side the medians over the rounds of calls/s and
p50/p99 round-trip latency (ms), the CPU each process used in the window (cores,
and microseconds per call), every round's figures, the ratio gateway/bare of the
median rates (the target's figure), the ratio of each back-to-back pair of rounds
and their median, and versions.

    .venv/bin/python bench/closed_loop.py [--cps 100] [--duration 10] [--rounds 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

LOADGEN = common.LOADGEN
BARE = os.path.join(common.BENCH_DIR, "bare_server.py")


# --pin: the server under test (one Python process) gets a core to itself; the harness (load
# generator, broker, responder: the rest of the world, elsewhere in production) shares the other.
SERVERS = ("gateway", "bare_server")
SERVER_CPU = 0
HARNESS_CPU = 1


def run_load(
    args: argparse.Namespace,
    work: common.Workdir,
    label: str,
    url: str,
    watched: dict[str, int],
    keep_samples: bool = False,
) -> dict[str, Any]:
    """One round: the closed loop against ``url``; ``watched`` names the server-side pids whose CPU
    is reported.  ``label`` names the round's files and its charge point ids. ``keep_samples`` adds
    every round trip (s, sorted) as ``latencies_s``, to pool several rounds' percentiles."""
    connect_allowance = 2.0 + args.cps / 250
    t_start = time.time() + connect_allowance + args.warmup
    t_end = t_start + args.duration
    procs = max(1, min(args.loadgen_procs, args.cps))
    share, extra = divmod(args.cps, procs)
    loadgens = []
    first = 0
    for i in range(procs):
        count = share + (1 if i < extra else 0)
        out = work.file(f"loadgen-{label}{i}.json")
        log = open(work.file(f"loadgen-{label}{i}.log"), "ab")
        argv = [
            common.PYTHON,
            LOADGEN,
            "closed",
            "--url",
            url,
            "--prefix",
            f"{label}cp",
            "--first",
            str(first),
            "--count",
            str(count),
            "--t-start",
            repr(t_start),
            "--t-end",
            repr(t_end),
            "--out",
            out,
            *(["--interval", repr(args.interval)] if getattr(args, "interval", 0.0) else []),
        ]
        loadgens.append((common.spawn(argv, log=log), out))
        log.close()
        first += count
    pids = dict(watched)
    for i, (process, _) in enumerate(loadgens):
        pids[f"loadgen{i}" if procs > 1 else "loadgen"] = process.pid
    if args.pin:
        for name, pid in pids.items():
            server = name.partition("-w")[0] in SERVERS  # a gateway's workers: "gateway-w1", ...
            common.pin(pid, SERVER_CPU if server else HARNESS_CPU)

    time.sleep(max(0.0, t_start - time.time()))
    profilers = []
    if args.profile:
        for name, pid in pids.items():
            if name == "mosquitto":
                continue
            out = os.path.join(args.profile, f"{label}-{name}.txt")
            argv = [args.py_spy, "record", "--nonblocking", "--threads", "-r", "200", *args.py_spy_opt]
            argv += ["-p", str(pid), "-d", str(int(args.duration)), "-f", "raw", "-o", out]
            profilers.append(common.spawn(argv))
    before = {name: common.cpu_seconds(pid) for name, pid in pids.items()}
    system_before, irq_before = common.system_cpu()
    everyone_before = common.all_cpu_seconds()
    wall_before = time.monotonic()
    time.sleep(max(0.0, t_end - time.time()))
    after = {name: common.cpu_seconds(pid) for name, pid in pids.items()}
    system_after, irq_after = common.system_cpu()
    everyone_after = common.all_cpu_seconds()
    system = system_after - system_before
    wall = time.monotonic() - wall_before
    ours = sum(after[name] - before[name] for name in pids)

    for profiler in profilers:
        try:
            profiler.wait(timeout=30)
        except Exception:
            common.stop(profiler)
    samples: list[float] = []
    errors: dict[str, int] = {}
    connected = 0
    for process, out in loadgens:
        try:
            process.wait(timeout=40)
        except Exception:
            common.stop(process)
            raise RuntimeError(f"{label}: a load generator did not finish; see {work.path}") from None
        if process.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"{label}: a load generator failed ({process.returncode}); see {work.path}")
        with open(out, encoding="utf-8") as f:
            part = json.load(f)
        samples.extend(part["latencies_s"])
        connected += part["connected"]
        if not part["connected_before_start"]:
            errors["connected_late"] = errors.get("connected_late", 0) + 1
        for key, value in part["errors"].items():
            errors[key] = errors.get(key, 0) + value
    samples.sort()

    def ms(fraction: float) -> float | None:
        value = common.percentile(samples, fraction)
        return None if value is None else round(value * 1000, 3)

    calls = len(samples)
    cpu = {name: after[name] - before[name] for name in pids}
    return {
        "calls_per_s": round(calls / args.duration, 1),
        "calls": len(samples),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "max_ms": round(samples[-1] * 1000, 3) if samples else None,
        "connected": connected,
        "errors": {k: v for k, v in errors.items() if v},
        "cpu_cores": {name: round(used / wall, 3) for name, used in cpu.items()},
        "cpu_us_per_call": {
            name: round(1e6 * used / calls, 1) if calls else None for name, used in cpu.items()
        },
        # busy cores outside the benchmark's processes (other work on the machine, the kernel)
        "cpu_cores_other": round(max(0.0, system - ours) / wall, 3),
        "cpu_cores_irq": round((irq_after - irq_before) / wall, 3),  # included in other
        "cpu_other_top": common.top_other(
            everyone_before, everyone_after, set(pids.values()) | {os.getpid()}, wall
        ),
        **({"latencies_s": samples} if keep_samples else {}),
    }


def with_gateway_options(args: argparse.Namespace, options: list[str]) -> argparse.Namespace:
    """A copy of ``args`` with ``options`` after its own ``--gateway-option`` settings (they win): the
    arguments of one ``GatewayStack`` among several set up differently."""
    return argparse.Namespace(**{**vars(args), "gateway_option": [*args.gateway_option, *options]})


class GatewayStack:
    """Private Mosquitto, the gateway under twistd (from source tree ``src``), and the responder."""

    def __init__(self, args: argparse.Namespace, work: common.Workdir, src: str = common.REPO) -> None:
        self.args = args
        self.work = work
        self.src = src
        self.broker = common.Broker(work, args.broker_option)
        self.gateway: common.Gateway | None = None
        self.responder: Any = None

    def start(self, lifetime: float) -> None:
        args, work = self.args, self.work
        self.broker.start()
        options = common.gateway_options(args.gateway_option)
        self.gateway = common.Gateway(work, self.broker.port, options, src=self.src)
        self.gateway.start()
        self.responder = common.start_responder(
            work,
            self.broker.port,
            lifetime,
            "--qos",
            str(args.responder_qos),
            *getattr(args, "responder_extra", ()),
        )

    def run(self, label: str, also_watched: dict[str, int] | None = None) -> dict[str, Any]:
        """One round; ``also_watched``: more harness processes (name -> pid) to pin and report."""
        assert self.gateway is not None and self.broker.process is not None
        master, *workers = self.gateway.pids()
        watched = {
            "gateway": master,
            **{f"gateway-w{i}": pid for i, pid in enumerate(workers, 1)},
            "mosquitto": self.broker.process.pid,
            "responder": self.responder.pid,
            **(also_watched or {}),
        }
        result = run_load(self.args, self.work, label, f"ws://127.0.0.1:{self.gateway.port}/ocpp/", watched)
        result["gateway_rss_kb"] = common.rss_total_kb([master, *workers])
        return result

    def stop(self) -> None:
        common.stop(self.responder)
        if self.gateway is not None:
            self.gateway.stop()
        self.broker.stop()


class BareStack:
    """The bare Autobahn server."""

    def __init__(self, args: argparse.Namespace, work: common.Workdir) -> None:
        self.args = args
        self.work = work
        self.server: Any = None
        self.port = 0

    def start(self, lifetime: float) -> None:
        log = open(self.work.file("bare.log"), "ab")
        self.server = common.spawn(
            [common.PYTHON, BARE, "--port", "0", "--max-seconds", str(lifetime)],
            log=log,
            stdout=common.subprocess.PIPE,
        )
        log.close()
        self.port = int(common.read_line(self.server.stdout, 15, "the bare server to listen").split()[1])

    def run(self, label: str) -> dict[str, Any]:
        url = f"ws://127.0.0.1:{self.port}/ocpp/"
        return run_load(self.args, self.work, label, url, {"bare_server": self.server.pid})

    def stop(self) -> None:
        common.stop(self.server)


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds; the per-round figures stay in ``rounds``."""

    def med(key: str) -> float | None:
        values = [r[key] for r in rounds if r[key] is not None]
        return round(common.median(values), 3) if values else None

    names = rounds[0]["cpu_cores"].keys()
    return {
        "calls_per_s": med("calls_per_s"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "cpu_cores": {n: round(common.median([r["cpu_cores"][n] for r in rounds]), 3) for n in names},
        "cpu_us_per_call": {
            n: round(common.median([r["cpu_us_per_call"][n] or 0.0 for r in rounds]), 1) for n in names
        },
        "cpu_cores_other": med("cpu_cores_other"),
        "errors": sum(sum(r["errors"].values()) for r in rounds),
        "rounds": rounds,
    }


def add_options(parser: argparse.ArgumentParser) -> None:
    """The closed loop's options (``compare_trees.py`` takes them too)."""
    parser.add_argument("--cps", type=int, default=100, help="charge points (connections)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds per side, alternating gateway and bare; the JSON gives medians and every round",
    )
    parser.add_argument("--loadgen-procs", type=int, default=1, help="load generator processes")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="pin the server to CPU 0 and the load generator, broker and responder to CPU 1 "
        "(default on 2+ CPUs; --no-pin leaves placement to the scheduler)",
    )
    parser.add_argument("--responder-qos", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument(
        "--broker-option",
        action="append",
        default=[],
        metavar="LINE",
        help="extra mosquitto.conf line, e.g. 'max_inflight_messages 100' (repeatable)",
    )
    common.add_gateway_option(parser)
    common.add_run_options(parser)
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy each Python process during the window; collapsed stacks to DIR",
    )
    parser.add_argument("--py-spy", default=os.path.join(os.path.dirname(common.PYTHON), "py-spy"))
    parser.add_argument("--py-spy-opt", action="append", default=[], help="extra py-spy option, e.g. --gil")


def lifetime(args: argparse.Namespace, rounds: int) -> float:
    """Seconds after which the children stop by themselves: ``rounds`` rounds of load, with room."""
    return rounds * (2.0 + args.cps / 250 + args.warmup + args.duration + 15) + 120


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings, for its JSON."""
    return {
        "cps": args.cps,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "loadgen_procs": max(1, min(args.loadgen_procs, args.cps)),
        "responder_qos": args.responder_qos,
        "pinned": args.pin,
        "gateway_options": args.gateway_option,
        "broker_options": args.broker_option,
    }


def ratios(gateway_rounds: list[dict[str, Any]], bare_rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Both sides' medians, the ratio of the median rates (the target's figure), and the ratio of
    each back-to-back pair of rounds (free of slow drift in machine speed) with its median."""
    gateway, bare = summarize(gateway_rounds), summarize(bare_rounds)
    ratio = round(gateway["calls_per_s"] / bare["calls_per_s"], 3) if bare["calls_per_s"] else None
    pairs = [
        round(g["calls_per_s"] / b["calls_per_s"], 3)
        for g, b in zip(gateway_rounds, bare_rounds, strict=True)
        if b["calls_per_s"]
    ]
    return {
        "gateway": gateway,
        "bare": bare,
        "ratio_gateway_to_bare": ratio,
        "ratio_per_round_pair": pairs,
        "ratio_paired_median": round(common.median(pairs), 3) if pairs else None,
        # the load generator is not the bottleneck while it stays well below one core
        "loadgen_max_cpu_cores": max(
            cores
            for r in gateway_rounds + bare_rounds
            for name, cores in r["cpu_cores"].items()
            if name.startswith("loadgen")
        ),
    }


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    """Both stacks started once, then ``--rounds`` rounds alternating gateway and bare."""
    gateway_stack, bare_stack = GatewayStack(args, work, args.gateway_src), BareStack(args, work)
    try:
        children_lifetime = lifetime(args, 2 * args.rounds)
        gateway_stack.start(children_lifetime)
        bare_stack.start(children_lifetime)
        gateway_rounds, bare_rounds = [], []
        for i in range(args.rounds):
            gateway_rounds.append(gateway_stack.run(f"gw{i}-"))
            bare_rounds.append(bare_stack.run(f"bare{i}-"))
    finally:
        gateway_stack.stop()
        bare_stack.stop()
    result = {**settings(args), **ratios(gateway_rounds, bare_rounds)}
    ratio = result["ratio_gateway_to_bare"]
    return {**result, "target_ratio": 0.5, "target_met": ratio is not None and ratio >= 0.5}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(parser)
    common.add_gateway_src_option(parser)
    return run_main("closed_loop", parser, "ocppgw-bench-closed-", measure)


def run_main(
    name: str,
    parser: argparse.ArgumentParser,
    workdir_prefix: str,
    measure: Callable[[argparse.Namespace, common.Workdir], dict[str, Any]],
) -> int:
    """A closed-loop benchmark's main once its options are declared (``add_options`` and its own):
    parse them, make the ``--profile`` directory, and ``measure`` under ``common.run_benchmark``."""
    args = parser.parse_args()
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    return common.run_benchmark(name, args, workdir_prefix, lambda work: measure(args, work))


if __name__ == "__main__":
    sys.exit(main())
