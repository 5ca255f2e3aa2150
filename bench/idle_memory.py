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
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

LOADGEN = os.path.join(common.BENCH_DIR, "loadgen.py")
RESPONDER = os.path.join(common.BENCH_DIR, "responder.py")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_kb(pid: int, key: str) -> int | None:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    broker = common.Broker(work)
    gateway = responder = None
    clients: list[Any] = []
    try:
        broker.start()
        gateway = common.Gateway(
            work,
            broker.port,
            {"gateway": {"ping_interval": args.ping_interval, "default_heartbeat_interval": "1h"}},
        )
        gateway.start()
        limit = open(f"/proc/{gateway.pid}/limits", encoding="ascii").read()
        nofile = next(line.split()[3:5] for line in limit.splitlines() if line.startswith("Max open files"))
        log = open(work.file("responder.log"), "ab")
        budget = args.cps / args.rate + 180
        responder = common.spawn(
            [common.PYTHON, RESPONDER, "--port", str(broker.port), "--max-seconds", str(budget + 60)],
            log=log,
            stdout=common.subprocess.PIPE,
        )
        log.close()
        assert responder.stdout is not None
        if common.read_line(responder.stdout, 15, "the responder to subscribe") != "ready":
            raise RuntimeError("the responder did not report ready")

        time.sleep(args.settle)
        rss_before = common.rss_kb(gateway.pid)
        fds_before = open_fds(gateway.pid)
        cpu_before = common.cpu_seconds(gateway.pid)

        procs = max(1, min(args.client_procs, args.cps))
        share, extra = divmod(args.cps, procs)
        first = 0
        url = f"ws://127.0.0.1:{gateway.port}/ocpp/"
        started = time.monotonic()
        for i in range(procs):
            count = share + (1 if i < extra else 0)
            log = open(work.file(f"loadgen-idle-{i}.log"), "ab")
            clients.append(
                common.spawn(
                    [
                        common.PYTHON,
                        LOADGEN,
                        "idle",
                        "--url",
                        url,
                        "--prefix",
                        f"idle{i}-cp",
                        "--first",
                        str(first),
                        "--count",
                        str(count),
                        "--rate",
                        str(args.rate / procs),
                        "--concurrency",
                        str(max(1, args.concurrency // procs)),
                        "--hold-seconds",
                        str(budget),
                    ],
                    log=log,
                    stdout=common.subprocess.PIPE,
                )
            )
            log.close()
            first += count
        opened = 0
        failures: dict[str, int] = {}
        for client in clients:
            remaining = max(1.0, started + budget - time.monotonic())
            report = json.loads(common.read_line(client.stdout, remaining, "the idle clients to connect"))
            opened += report["opened"]
            for key, value in report["failures"].items():
                failures[key] = failures.get(key, 0) + value
        open_seconds = time.monotonic() - started
        time.sleep(args.settle)
        rss_after = common.rss_kb(gateway.pid)
        fds_after = open_fds(gateway.pid)
        cpu_after = common.cpu_seconds(gateway.pid)
        hwm = status_kb(gateway.pid, "VmHWM")
        alive = gateway.process.poll() is None
    finally:
        for client in clients:
            common.stop(client)
        common.stop(responder)
        if gateway is not None:
            gateway.stop()
        broker.stop()
    per = (rss_after - rss_before) / opened if opened else None
    return {
        "cps": args.cps,
        "opened": opened,
        "failures": failures,
        "gateway_alive": alive,
        "gateway_open_fds_before": fds_before,
        "gateway_open_fds_after": fds_after,
        "gateway_nofile_limit": [int(v) for v in nofile],
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "vm_hwm_kb": hwm,
        "kb_per_connection": None if per is None else round(per, 2),
        "target_kb_per_connection": 30,
        "target_met": per is not None and per < 30 and opened == args.cps,
        "open_seconds": round(open_seconds, 2),
        "gateway_cpu_s_while_opening": round(cpu_after - cpu_before, 2),
        "client_procs": len(clients),
        "rate_per_s": args.rate,
        "ping_interval": args.ping_interval,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cps", type=int, default=10000, help="idle charge points (connections)")
    parser.add_argument(
        "--rate",
        type=float,
        default=500.0,
        help="connections opened per second at most, in all (the gateway's default max_conn_rate is 1000)",
    )
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in progress at most, in all")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before each RSS reading")
    parser.add_argument("--ping-interval", default="1h", help="the gateway's [gateway] ping_interval")
    common.add_run_options(parser)
    args = parser.parse_args()
    common.raise_nofile()
    background = common.wait_quiet(args.wait_quiet, name="idle_memory")

    work = common.Workdir("ocppgw-bench-idle-", keep=args.keep)
    ok = False
    try:
        date = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        result = {
            "benchmark": "idle_memory",
            "date": date,
            "busy_cores_before_run": round(background, 3),
            **measure(args, work),
            "versions": common.versions(),
        }
        if args.keep:
            result["workdir"] = work.path
        common.dump(result, args.out)
        ok = True
    finally:
        if not ok:
            print(f"idle_memory: failed; logs in {work.path}", file=sys.stderr)
            work.keep = True
        work.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
