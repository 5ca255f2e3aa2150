"""The management API's cost: the closed loop with the API off, and on while /metrics is scraped.

Two gateway stacks (each its own Mosquitto and responder, started as ``closed_loop.py`` starts
one, ``closed_loop.GatewayStack``) run for the whole phase: one with ``[api] enable = false``, one
with the API on a free loopback port and an API key (role viewer) from a bootstrap file, both
set through ``--gateway-option``.  ``--rounds`` rounds follow, each two back-to-back closed-loop
runs (``closed_loop.run_load``, ``--cps`` charge points): API off then on in even rounds, on then
off in odd ones (``compare_trees.orders``), so a drift in machine speed weighs on both alike.
During every API-on run a scraper in its own process (this script, ``scrape``) GETs ``/metrics``
with Basic ``key:secret`` every ``--scrape-interval`` seconds on one keep-alive connection, as
Prometheus does; it is pinned with the harness (``--pin``) and its scrapes and failures are counted.

Prints one JSON object: per variant what ``closed_loop.py`` reports for a side (median calls/s,
p50/p99, CPU per process in cores and microseconds per call, every round), the ratio of the median
rates, the ratio API-on / API-off of each round's pair and its median (the target's figure, >=
0.97), the gateway's CPU per call on minus off, the scrapes, and the gateway's CPU for one scrape
measured alone on the idle gateway before the rounds.

    .venv/bin/python bench/api_overhead.py [--rounds 5] [--duration 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import closed_loop
import common
import compare_trees

VARIANTS = ("api_off", "api_on")
# compare_trees alternates its two trees; API off takes the place of "before", on of "after"
VARIANT_OF_TREE = dict(zip(compare_trees.TREES, VARIANTS, strict=True))
TARGET_RATIO = 0.97
API_KEY, API_SECRET = "bench", "bench-secret"
METRICS_PATH = "/metrics"


# -- the scraper (its own process) ---------------------------------------------------------------


class _Stop(BaseException):
    """Raised by SIGTERM in the scraper: report and end."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop


def basic_auth(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode("ascii")


class Scraper:
    """GETs one path on one keep-alive HTTP connection (opened again after a failure), counting."""

    def __init__(self, port: int, path: str, authorization: str) -> None:
        self.port = port
        self.path = path
        self.headers = {"Authorization": authorization}
        self.connection: http.client.HTTPConnection | None = None
        self.ok = 0
        self.failures: dict[str, int] = {}
        self.latencies: list[float] = []
        self.body_bytes = 0

    def scrape(self) -> None:
        started = time.monotonic()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self.connection.request("GET", self.path, headers=self.headers)
            response = self.connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            self.fail(type(e).__name__)
            return
        if response.status != 200:
            self.fail(f"http_{response.status}")
            return
        self.ok += 1
        self.latencies.append(time.monotonic() - started)
        self.body_bytes = len(body)

    def fail(self, kind: str) -> None:
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def report(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def ms(fraction: float) -> float | None:
            value = common.percentile(ordered, fraction)
            return None if value is None else round(value * 1000, 2)

        return {
            "scrapes": self.ok + sum(self.failures.values()),
            "failed": sum(self.failures.values()),
            "failures": self.failures,
            "p50_ms": ms(0.5),
            "max_ms": ms(1.0),
            "body_bytes": self.body_bytes,
        }


def scrape_main(argv: list[str]) -> int:
    """``api_overhead.py scrape``: scrape every ``--interval`` s until SIGTERM (or ``--max-seconds``),
    then print one JSON line."""
    parser = argparse.ArgumentParser(prog="api_overhead.py scrape")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default=METRICS_PATH)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    scraper = Scraper(args.port, args.path, basic_auth(API_KEY, API_SECRET))
    signal.signal(signal.SIGTERM, _raise_stop)
    started = time.monotonic()
    try:
        n = 0
        while time.monotonic() - started < args.max_seconds:
            scraper.scrape()
            n += 1
            time.sleep(max(0.0, started + n * args.interval - time.monotonic()))
    except _Stop:
        pass
    print(json.dumps(scraper.report()), flush=True)
    return 0


# -- the benchmark -------------------------------------------------------------------------------


class ApiStack(closed_loop.GatewayStack):
    """A closed-loop gateway stack with the API on a free port and one API key, scraped in each run."""

    def __init__(self, args: argparse.Namespace, work: common.Workdir) -> None:
        self.api_port = common.free_port()
        bootstrap = work.file("api_keys")
        with open(bootstrap, "w", encoding="utf-8") as f:
            f.write(f"{API_KEY}:{API_SECRET}:viewer\n")
        options = ["api.enable=true", f"api.bind=127.0.0.1:{self.api_port}"]
        options.append(f"api.bootstrap_file={bootstrap}")
        super().__init__(closed_loop.with_gateway_options(args, options), work, args.gateway_src)

    def start(self, lifetime: float) -> None:
        super().start(lifetime)
        common.wait_until(lambda: common.port_accepts(self.api_port), 15, "the management API to listen")
        self.lifetime = lifetime

    def scrape_cost(self, scrapes: int = 200) -> dict[str, Any]:
        """The idle gateway's CPU for ``scrapes`` back-to-back scrapes (fails unless all answer 200)."""
        assert self.gateway is not None
        scraper = Scraper(self.api_port, METRICS_PATH, basic_auth(API_KEY, API_SECRET))
        scraper.scrape()  # connection opened, first exposition built
        before = common.cpu_seconds(self.gateway.pid)
        for _ in range(scrapes):
            scraper.scrape()
        used = common.cpu_seconds(self.gateway.pid) - before
        report = scraper.report()
        if report["failed"]:
            raise RuntimeError(f"scraping {METRICS_PATH} failed: {report['failures']}; see {self.work.path}")
        return {
            "scrapes": scrapes,
            "gateway_cpu_ms_per_scrape": round(1000 * used / scrapes, 2),
            "p50_ms": report["p50_ms"],
            "body_bytes": report["body_bytes"],
        }

    def run(self, label: str, also_watched: dict[str, int] | None = None) -> dict[str, Any]:
        argv = [common.PYTHON, os.path.abspath(__file__), "scrape", "--port", str(self.api_port)]
        argv += ["--interval", str(self.args.scrape_interval), "--max-seconds", str(self.lifetime)]
        log = open(self.work.file(f"{label}scraper.log"), "ab")
        scraper = common.spawn(argv, log=log, stdout=subprocess.PIPE)
        log.close()
        try:
            result = super().run(label, {**(also_watched or {}), "scraper": scraper.pid})
        finally:
            common.stop(scraper)
        assert scraper.stdout is not None
        result["scrapes"] = json.loads(scraper.stdout.read() or "null")
        if result["scrapes"] is None:
            raise RuntimeError(f"{label}: the scraper did not report; see {self.work.path}")
        return result


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    stacks: dict[str, closed_loop.GatewayStack] = {
        "api_off": closed_loop.GatewayStack(
            closed_loop.with_gateway_options(args, ["api.enable=false"]),
            common.Workdir("api_off-", True, work),
            args.gateway_src,
        ),
    }
    api = stacks["api_on"] = ApiStack(args, common.Workdir("api_on-", True, work))
    rounds: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    order_names = []
    try:
        children_lifetime = closed_loop.lifetime(args, 2 * args.rounds)
        for stack in stacks.values():
            stack.start(children_lifetime)
        scrape_cost = api.scrape_cost()
        for i, order in enumerate(compare_trees.orders(args.rounds)):
            order_names.append([VARIANT_OF_TREE[tree] for tree in order])
            for variant in order_names[-1]:
                rounds[variant].append(stacks[variant].run(f"{variant}{i}-"))
    finally:
        for stack in stacks.values():
            stack.stop()
    # closed_loop's gateway/bare pairing, with API on as the gateway and API off as the bare side
    paired = closed_loop.ratios(rounds["api_on"], rounds["api_off"])
    on, off = paired["gateway"], paired["bare"]
    scrapes = [r["scrapes"] for r in rounds["api_on"]]
    failed = sum(s["failed"] for s in scrapes)
    ratio = paired["ratio_paired_median"]
    return {
        **closed_loop.settings(args),
        "scrape_interval_s": args.scrape_interval,
        "round_orders": order_names,
        "api_off": off,
        "api_on": on,
        "ratio_on_to_off": paired["ratio_gateway_to_bare"],
        "ratio_per_round_pair": paired["ratio_per_round_pair"],
        "ratio_paired_median": ratio,
        "gateway_cpu_us_per_call_on_minus_off": compare_trees.difference(
            on["cpu_us_per_call"]["gateway"], off["cpu_us_per_call"]["gateway"]
        ),
        "scrapes": sum(s["scrapes"] for s in scrapes),
        "scrapes_failed": failed,
        "scrape_cost_idle": scrape_cost,
        "loadgen_max_cpu_cores": paired["loadgen_max_cpu_cores"],
        "target": f"ratio_paired_median >= {TARGET_RATIO}, every scrape answered",
        "target_met": ratio is not None and ratio >= TARGET_RATIO and failed == 0 and bool(scrapes),
    }


def main() -> int:
    if sys.argv[1:2] == ["scrape"]:
        return scrape_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    closed_loop.add_options(parser)
    common.add_gateway_src_option(parser)
    parser.add_argument(
        "--scrape-interval", type=float, default=1.0, help="seconds between scrapes of /metrics"
    )
    return closed_loop.run_main("api_overhead", parser, "ocppgw-bench-api-", measure)


if __name__ == "__main__":
    sys.exit(main())
