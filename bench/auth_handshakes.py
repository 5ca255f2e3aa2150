"""Authentication cost (issue 10): WebSocket handshakes per second with HTTP Basic credentials and no
authenticator, the built-in database with sha256 and with bcrypt (rounds 10), PostgreSQL and Redis,
in one run; then the p99 round trip of one connected charge point while ``--storm`` charge points
hammer the bcrypt handshake, against its p99 without the storm.

Five gateway stacks (``closed_loop.GatewayStack``: private Mosquitto, twistd gateway, responder) run
for the whole benchmark, one per set-up; the users are added by the real ``ocppgw users`` process
(built-in database) or written into a database / keys of the run's own on the machine's PostgreSQL
(127.0.0.1:5432, user postgres) and Redis (127.0.0.1:6379, database 3), removed afterwards.

Handshakes phase: ``--rounds`` rounds, each one ``tls_edge.handshake_round`` per set-up in turn
(``loadgen.py handshakes``: a new connection per handshake, Basic credentials from the URL's user
info, then the closing handshake; ``--concurrency`` at a time from a separate process); ``--rounds
0`` skips it (and starts only the bcrypt stack). Storm phase, on the bcrypt stack: ``--storm-pairs``
pairs of windows, each ``closed_loop.run_load`` with one charge point (a Heartbeat closed loop, flat
out; ``--probe-interval S`` pauses S seconds from each reply to the next Heartbeat) for ``--warmup``
+ ``--duration`` s, alone ("calm") or while a ``loadgen.py handshakes`` process keeps ``--storm``
bcrypt handshakes in flight from before the warm-up to past the window ("storm"; its handshakes per
second read from the gateway's per-decision log lines). Calm goes first in even pairs, storm in odd
ones, so that the machine's drift (the calm p99 alone moves 0.6-2.6 ms from run to run) weighs on
both; after a storm window the gateway's processes are left to fall idle before the next window.
Reported: each window's p50/p99/max, the pooled p99 of all calm windows' round trips against all
storm windows' (``one_charge_point.without_storm`` / ``with_storm`` / ``p99_ratio``, as before with
one pair) and the median of the per-pair ratios. Each storm window also lines its round trips up with
the storm's handshake answers (each let-in or refusal: the end of a bcrypt job or of its wait):
``p99_ms_apart_from_answers`` is the p99 of the calls with no answer during them nor in the 3 ms
before, ``p99_ms_apart_from_shifted_answers`` the same with the answers 30 ms later (a control); a
gap between the two says how much of the storm's tail sits at those moments, whatever the calm
baseline did. Two diagnostics change the storm, not the target:
``--storm-elsewhere`` sends it to a second bcrypt stack of its own (broker, gateway, hashing process),
so the measured charge point's gateway and broker see none of it and only the machine is shared;
``--storm-wrong-password`` makes every storm handshake a wrong password (hashed, then 401), so none
is let in (``storm_denied_per_s`` counts them). Targets: sha256 >= 0.85 x none (null without
rounds); pooled p99 with the storm <= 2 x p99 without it.

    .venv/bin/python bench/auth_handshakes.py [--handshakes 2000] [--bcrypt-handshakes 300] [--rounds 3]
        [--storm 200] [--storm-pairs 3] [--probe-interval 0] [--duration 10] [--warmup 3] [--out FILE]
        [--storm-elsewhere] [--storm-wrong-password]
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import closed_loop
import common
import tls_edge

USER, PASSWORD, SALT = "bench", "bench-password", "5a1t0fthebench"
SETUPS = ("none", "sha256", "bcrypt", "postgresql", "redis")
REDIS_DB = 3
HASHED = hashlib.sha256((PASSWORD + SALT).encode()).hexdigest()  # sha256, salt_position = suffix
SUFFIX = ["authentication.password_hash_algorithm=sha256", "authentication.salt_position=suffix"]
STORM_RATE_FALLBACK = 50.0  # bcrypt handshakes/s assumed when no round measured it (--rounds 0)
ANSWER_SLACK_S = 0.003  # a Call sent up to this long after a storm answer still counts as next to it
CONTROL_SHIFT_S = 0.030  # the control: the same answers moved by about half a bcrypt job
EXCESS_BEFORE_S, EXCESS_AFTER_S = 0.004, 0.003  # the calls a let-in can delay (bench/README.md, issue 10)
SETTLE_S = 30.0  # after a storm window, at most this long for the gateway to fall idle


def _options(setup: str, name: str) -> list[str]:
    """The ``[authentication]`` lines of ``setup`` (SECTION.KEY=VALUE); ``name`` is the run's own
    database / key prefix."""
    if setup == "none":
        return []
    if setup in ("sha256", "bcrypt"):
        hashing = SUFFIX if setup == "sha256" else ["authentication.password_hash_algorithm=bcrypt"]
        return ["authentication.backend=built_in_database", *hashing, "authentication.salt_rounds=10"]
    if setup == "postgresql":
        return [
            "authentication.backend=postgresql", "authentication.server=127.0.0.1:5432",
            f"authentication.database={name}", "authentication.username=postgres", *SUFFIX,
            "authentication.query=SELECT password_hash, salt FROM users WHERE username = ${username} LIMIT 1",
        ]  # fmt: skip
    return [
        "authentication.backend=redis", "authentication.server=127.0.0.1:6379",
        f"authentication.database={REDIS_DB}", *SUFFIX,
        f"authentication.cmd=HMGET {name}:${{username}} password_hash salt",
    ]  # fmt: skip


class AuthStack(closed_loop.GatewayStack):
    """One set-up's stack, with its user ``bench`` in place; ``url()`` carries the Basic credentials
    (websockets sends the URL's user info as ``Authorization: Basic``). Duck-types ``tls_edge``'s
    edge for ``handshake_round``."""

    def __init__(self, args: argparse.Namespace, work: common.Workdir, setup: str) -> None:
        self.setup = setup
        self.name = f"ocppgw_bench_{os.getpid()}"
        own = argparse.Namespace(**vars(args))
        # five gateways run at once: the management API (on by default, one fixed port) stays off;
        # no connection-rate limit, as in tls_edge: the default 1000/s refused up to a tenth of the
        # fastest stack's connections, which counted against it and not against the others
        own.gateway_option = [
            *args.gateway_option, "api.enable=false", "listeners.ws.bench.max_conn_rate=infinity",
            *_options(setup, self.name),
        ]  # fmt: skip
        own.handshakes = args.bcrypt_handshakes if setup == "bcrypt" else args.handshakes
        super().__init__(own, common.Workdir(f"{setup}-", parent=work), args.gateway_src)

    def start(self, lifetime: float) -> None:
        if self.setup == "postgresql":
            import psycopg

            with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as db:
                db.execute(f"CREATE DATABASE {self.name}")
            with psycopg.connect(host="127.0.0.1", user="postgres", dbname=self.name, autocommit=True) as db:
                db.execute("CREATE TABLE users (username text, password_hash text, salt text)")
                db.execute("INSERT INTO users VALUES (%s, %s, %s)", (USER, HASHED, SALT))
        elif self.setup == "redis":
            import redis

            with redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB) as db:
                db.hset(f"{self.name}:{USER}", mapping={"password_hash": HASHED, "salt": SALT})
        super().start(lifetime)
        if self.setup in ("sha256", "bcrypt"):
            assert self.gateway is not None
            argv = [common.PYTHON, "-m", "ocppgw.cli", "users", "--config", self.gateway.ini, "add", USER]
            subprocess.run([*argv, "--password", PASSWORD], cwd=self.src, env=common.gateway_env(self.src),
                           check=True, timeout=60, capture_output=True)  # fmt: skip

    @property
    def gateway_pid(self) -> int:
        assert self.gateway is not None
        return self.gateway.pid

    def url(self, side: str = "") -> str:
        assert self.gateway is not None
        return f"ws://{USER}:{PASSWORD}@127.0.0.1:{self.gateway.port}/ocpp/"

    def loadgen_options(self, side: str) -> list[str]:
        return []

    def warm(self) -> None:
        """``2 x --concurrency`` unmeasured handshakes: the backend's pools open their connections
        (and threads) now, not in the first measured round, which ends once the gateway's descriptors
        are back to where they were before it."""
        argv = [common.PYTHON, common.LOADGEN, "handshakes", "--url", self.url(), "--prefix", "warm"]
        argv += ["--count", str(2 * self.args.concurrency), "--concurrency", str(self.args.concurrency)]
        subprocess.run(
            argv, check=True, timeout=120, stdout=subprocess.DEVNULL, preexec_fn=common._child_setup
        )
        time.sleep(1.0)  # the gateway ends those sessions

    def stop(self) -> None:
        super().stop()
        if self.setup == "postgresql":
            import psycopg

            with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as db:
                db.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        elif self.setup == "redis":
            import redis

            with redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB) as db:
                db.delete(f"{self.name}:{USER}")


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}) .*authentication of .*: (allow|deny)\b")


def decided_between(log_path: str, begin: float, end: float) -> dict[str, int]:
    """Handshakes the gateway logged as allowed and as denied with a time stamp in [begin, end)
    (1 s resolution), read in one pass."""
    counts = {"allow": 0, "deny": 0}
    with open(log_path, encoding="utf-8", errors="replace") as f:
        for line in f:
            match = _STAMP.match(line)
            if match and begin <= datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S%z").timestamp() < end:
                counts[match.group(2)] += 1
    return counts


def one_charge_point(
    args: argparse.Namespace,
    stack: AuthStack,
    label: str,
    storm_count: int = 0,
    storm_stack: AuthStack | None = None,
) -> dict[str, Any]:
    """One charge point's closed loop on the bcrypt stack, alone or (``storm_count`` > 0) while that
    many bcrypt handshakes are made, ``--storm`` at a time: enough to outlast the window. They go to
    ``storm_stack`` when given (``--storm-elsewhere``), else to ``stack``."""
    target = storm_stack or stack
    load = argparse.Namespace(cps=1, warmup=args.warmup, duration=args.duration, loadgen_procs=1,
                              pin=False, profile=None, interval=args.probe_interval)  # fmt: skip
    assert stack.gateway is not None and stack.broker.process is not None
    watched = {"gateway": stack.gateway.pid, "mosquitto": stack.broker.process.pid}
    storm: subprocess.Popen | None = None
    if storm_count:  # begins a second later, once the measured charge point is in (not timed)
        log = open(stack.work.file(f"loadgen-{label}storm.log"), "ab")
        url = target.url()
        if args.storm_wrong_password:
            url = url.replace(f":{PASSWORD}@", f":not-{PASSWORD}@")
        argv = [common.PYTHON, common.LOADGEN, "handshakes", "--url", url, "--prefix", f"{label}s"]
        argv += ["--count", str(storm_count), "--concurrency", str(args.storm), "--reply-timeout", "60"]
        argv += ["--answers-out", stack.work.file(f"answers-{label}.txt")]
        storm = common.spawn(["/bin/sh", "-c", 'sleep 1 && exec "$@"', "sh", *argv], log=log)
        log.close()
        watched["storm_loadgen"] = storm.pid
    window_start = time.time() + 2.0 + 1 / 250 + args.warmup  # as run_load sets it
    try:
        result = closed_loop.run_load(load, stack.work, label, stack.url(), watched, keep_samples=True)
    finally:
        common.stop(storm)
    if storm_count:
        assert target.gateway is not None
        decided = decided_between(target.gateway.log_path, window_start, window_start + args.duration)
        result["storm_handshakes_per_s"] = round(decided["allow"] / args.duration, 1)
        result["storm_denied_per_s"] = round(decided["deny"] / args.duration, 1)
        result.update(next_to_answers(stack.work, label))
        result["settle_s"] = settle(target.gateway_pid)
    return result


def apart_from(
    sent: list[float], latencies: list[float], events: list[float], shift: float = 0.0
) -> list[float]:
    """The round trips during which no event of ``events`` (sorted wall-clock times, moved by
    ``shift``) happened, nor in the ``ANSWER_SLACK_S`` before the Call was sent."""
    kept = []
    for at, latency in zip(sent, latencies, strict=True):
        i = bisect.bisect_left(events, at - ANSWER_SLACK_S - shift)
        if i == len(events) or events[i] + shift > at + latency:
            kept.append(latency)
    return sorted(kept)


def next_to_answers(work: common.Workdir, label: str) -> dict[str, Any]:
    """Which round trips of a storm window ran next to an answer of the storm's (the let-in or
    refused handshakes, each the end of a bcrypt job or of its wait): the p99 of the others, and of
    the others when the answers are moved by ``CONTROL_SHIFT_S`` (a control: leaving out as many calls
    at random moments barely moves a p99)."""
    with open(work.file(f"loadgen-{label}0.json"), encoding="utf-8") as f:
        probe = json.load(f)
    with open(work.file(f"answers-{label}.txt"), encoding="utf-8") as f:
        rows = [line.split() for line in f if line.strip()]
    answers = sorted(float(row[0]) for row in rows)
    let_ins = sorted(float(row[0]) for row in rows if row[1:2] == ["101"])
    sent, latencies = probe["sent_at_s"], probe["latencies_s"]
    apart = apart_from(sent, latencies, answers)
    control = apart_from(sent, latencies, answers, CONTROL_SHIFT_S)
    window = (sent[0], sent[-1]) if sent else (0.0, 0.0)
    return {
        "storm_answers": sum(1 for t in answers if window[0] <= t <= window[1]),
        "calls_next_to_answers": len(latencies) - len(apart),
        "p99_ms_apart_from_answers": _ms(common.percentile(apart, 0.99)),
        "p99_ms_apart_from_shifted_answers": _ms(common.percentile(control, 0.99)),
        "excess_ms_per_let_in": excess_per_event(sent, latencies, let_ins),
        "excess_ms_per_shifted_let_in": excess_per_event(sent, latencies, let_ins, CONTROL_SHIFT_S),
        "apart_latencies_s": apart,
        "control_latencies_s": control,
    }


def excess_per_event(
    sent: list[float], latencies: list[float], events: list[float], shift: float = 0.0
) -> float | None:
    """How much one event (a let-in's 101 reaching the storm's client) delays the charge point: the
    time its calls sent from ``EXCESS_BEFORE_S`` before to ``EXCESS_AFTER_S`` after the event took
    beyond the window's median, summed, averaged over the events inside the window (ms; ``shift``
    moves the events, a control). A measure of the let-in's whole cost to the others, where a p99
    only counts how many calls it touched."""
    if not sent:
        return None
    median = sorted(latencies)[len(latencies) // 2]
    first, last = sent[0] + EXCESS_BEFORE_S, sent[-1] - EXCESS_AFTER_S
    inside = [t + shift for t in events if first <= t + shift <= last]
    if not inside:
        return None
    total = 0.0
    for at in inside:
        i = bisect.bisect_left(sent, at - EXCESS_BEFORE_S)
        while i < len(sent) and sent[i] < at + EXCESS_AFTER_S:
            total += max(0.0, latencies[i] - median)
            i += 1
    return round(total / len(inside) * 1000, 3)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def settle(pid: int) -> float:
    """Wait (at most ``SETTLE_S``) until the gateway ``pid`` and its hashing processes use less than
    0.1 of a core over half a second: the storm's queued bcrypt jobs are not the next window's.
    Returns the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < SETTLE_S:
        before = common.tree_cpu_seconds(pid)
        time.sleep(0.5)
        if common.tree_cpu_seconds(pid) - before < 0.05:
            break
    return round(time.monotonic() - began, 1)


def pooled(windows: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    """p50/p99/max over every round trip of ``windows`` (their ``latencies_s``), as one window's."""
    samples = sorted(x for w in windows for x in w["latencies_s"])

    def ms(fraction: float) -> float | None:
        return _ms(common.percentile(samples, fraction))

    result = {
        "windows": len(windows),
        "calls": len(samples),
        "calls_per_s": round(len(samples) / (duration * len(windows)), 1),
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "max_ms": round(samples[-1] * 1000, 3) if samples else None,
    }
    for key in ("storm_handshakes_per_s", "storm_denied_per_s"):
        rates = [w[key] for w in windows if key in w]
        if rates:
            result[key] = round(sum(rates) / len(rates), 1)
    for key in ("excess_ms_per_let_in", "excess_ms_per_shifted_let_in"):
        values = [w[key] for w in windows if w.get(key) is not None]
        if values:
            result[key] = round(sum(values) / len(values), 3)
    for key, name in (("apart_latencies_s", "p99_ms_apart_from_answers"),
                      ("control_latencies_s", "p99_ms_apart_from_shifted_answers")):  # fmt: skip
        if any(key in w for w in windows):
            result[name] = _ms(common.percentile(sorted(x for w in windows for x in w.get(key, ())), 0.99))
    return result


def storm_phase(
    args: argparse.Namespace, stack: AuthStack, storm_count: int, storm_stack: AuthStack | None = None
) -> dict[str, Any]:
    """``--storm-pairs`` pairs of a calm and a storm window (calm first in even pairs); the pooled
    p99s, their ratio and the median of the per-pair ratios."""
    windows: list[dict[str, Any]] = []
    for pair in range(args.storm_pairs):
        for kind in ("calm", "storm") if pair % 2 == 0 else ("storm", "calm"):
            count = storm_count if kind == "storm" else 0
            window = one_charge_point(args, stack, f"{kind}{pair}", count, storm_stack)
            windows.append({"pair": pair, "kind": kind, **window})
    calm = pooled([w for w in windows if w["kind"] == "calm"], args.duration)
    stormy = pooled([w for w in windows if w["kind"] == "storm"], args.duration)
    pair_ratios = []
    for pair in range(args.storm_pairs):
        p99 = {w["kind"]: w["p99_ms"] for w in windows if w["pair"] == pair}
        pair_ratios.append(tls_edge.ratio(p99["storm"], p99["calm"]))
    known = [r for r in pair_ratios if r is not None]
    for window in windows:
        for key in ("latencies_s", "apart_latencies_s", "control_latencies_s"):
            window.pop(key, None)
    return {
        "without_storm": calm,
        "with_storm": stormy,
        "p99_ratio": tls_edge.ratio(stormy["p99_ms"], calm["p99_ms"]),
        "p99_ratio_per_pair": pair_ratios,
        "p99_ratio_pairs_median": round(common.median(known), 3) if known else None,
        "windows": windows,
    }


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    setups = SETUPS if args.rounds else ("bcrypt",)  # no rounds: only the storm phase's stack
    stacks = {setup: AuthStack(args, work, setup) for setup in setups}
    storm_stack = AuthStack(args, work, "bcrypt") if args.storm_elsewhere else None
    everything = [*stacks.values(), *([storm_stack] if storm_stack else [])]
    window = args.warmup + args.duration + 30
    lifetime = 600 + args.rounds * 120 + 2 * args.storm_pairs * (window + SETTLE_S)
    rounds: dict[str, list[dict[str, Any]]] = {setup: [] for setup in SETUPS}
    try:
        for stack in everything:
            stack.start(lifetime)
        for stack in everything:
            stack.warm()
        for i in range(args.rounds):
            for setup, stack in stacks.items():
                rounds[setup].append(tls_edge.handshake_round(stack, setup, f"{setup}{i}"))  # type: ignore[arg-type]
        bcrypt_rate = tls_edge.summarize(rounds["bcrypt"])["handshakes_per_s"] or STORM_RATE_FALLBACK
        # three times what the bcrypt rounds managed, over a whole window: outlasts it
        storm_count = max(2 * args.storm, int(3 * bcrypt_rate * (2 + args.warmup + args.duration + 5)))
        storm = storm_phase(args, stacks["bcrypt"], storm_count, storm_stack)
    finally:
        for stack in everything:
            stack.stop()
    handshakes = {setup: tls_edge.summarize(r) for setup, r in rounds.items()}
    rate = {setup: handshakes[setup]["handshakes_per_s"] for setup in SETUPS}
    pairs = [
        s["handshakes_per_s"] / n["handshakes_per_s"]
        for s, n in zip(rounds["sha256"], rounds["none"], strict=True)
    ]
    sha_ratio = round(common.median(pairs), 3) if pairs else None
    p99_ratio = storm["p99_ratio"]
    return {
        "settings": {
            "handshakes_per_round": args.handshakes,
            "bcrypt_handshakes_per_round": args.bcrypt_handshakes,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "storm": args.storm,
            "storm_handshakes_per_window": storm_count,
            "storm_pairs": args.storm_pairs,
            "storm_elsewhere": args.storm_elsewhere,
            "storm_wrong_password": args.storm_wrong_password,
            "probe_interval_s": args.probe_interval,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
        },
        "handshakes_per_s": rate,
        "ratio_to_none": {setup: tls_edge.ratio(rate[setup], rate["none"]) for setup in SETUPS},
        "ratio_sha256_to_none_paired_median": sha_ratio,
        "handshakes": handshakes,
        "one_charge_point": storm,
        "targets": {
            "sha256_ge_0.85_none": None if sha_ratio is None else sha_ratio >= 0.85,
            "storm_p99_le_2x": p99_ratio is not None and p99_ratio <= 2.0,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=2000, help="handshakes per round and set-up")
    parser.add_argument("--bcrypt-handshakes", type=int, default=300, help="handshakes per bcrypt round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each every set-up in turn")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in progress at most")
    parser.add_argument("--handshake-procs", type=int, default=1, help="client processes per round")
    parser.add_argument("--storm", type=int, default=200, help="bcrypt handshakes kept in flight")
    parser.add_argument(
        "--storm-pairs", type=int, default=3, help="calm and storm windows, alternating (at least 1)"
    )
    parser.add_argument(
        "--storm-elsewhere",
        action="store_true",
        help="the storm hammers a second bcrypt stack (own broker, gateway): its cost to the machine alone",
    )
    parser.add_argument(
        "--storm-wrong-password",
        action="store_true",
        help="the storm's handshakes carry a wrong password: each is hashed, then denied (401), none let in",
    )
    parser.add_argument("--probe-interval", type=float, default=0.0, help="s from a reply to the next call")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds, storm phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring, storm phase")
    parser.add_argument("--responder-qos", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument(
        "--broker-option",
        action="append",
        default=["set_tcp_nodelay true"],  # else one charge point's round trip is ~44 ms of delayed ACK
        metavar="LINE",
        help="mosquitto.conf line (repeatable; default: set_tcp_nodelay true, see broker_latency.py)",
    )
    common.add_gateway_option(parser)
    common.add_run_options(parser)
    common.add_gateway_src_option(parser)
    args = parser.parse_args()
    if args.storm_pairs < 1 or args.rounds < 0:
        parser.error("--storm-pairs must be at least 1 and --rounds at least 0")
    return common.run_benchmark(
        "auth_handshakes", args, "ocppgw-bench-auth-", lambda work: measure(args, work)
    )


if __name__ == "__main__":
    sys.exit(main())
