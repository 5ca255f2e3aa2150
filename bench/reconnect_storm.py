"""Reconnect storm (issue 12): N connected charge points all drop and reconnect at once.

Starts a private Mosquitto, the gateway (management API on a free port for ``/metrics``) and
``responder.py``; ``loadgen.py storm`` processes (each from its own loopback source address) open N
connections, each with a BootNotification round trip. Then every load generator gets SIGUSR1 at the
same moment: each drops all its connections (TCP abort) and reconnects each after a random delay of
up to ``--jitter`` seconds (as chargers do), retrying a refused attempt, until its BootNotification
round trip is done. Reported: the time until the last one is back, p50/p99, attempts that failed
(refusals by ``max_conn_rate`` among them), the gateway's CPU per reconnect (``/proc/<pid>/stat``,
from the signal until the last one is back), and presence: an MQTT subscriber counts one
``disconnected`` and one ``connected`` presence per charge point in the storm (``presence_lost`` is
what is missing once the gateway's link has nothing outstanding). Prints one JSON object.

    .venv/bin/python bench/reconnect_storm.py --cps 2000
    .venv/bin/python bench/reconnect_storm.py --cps 10000 --out bench/results/reconnect_storm.json
    .venv/bin/python bench/reconnect_storm.py --cps 10000 --gateway-option gateway.workers=2 \\
        --gateway-option listeners.ws.bench.max_conn_rate=infinity
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from paho.mqtt import client as mqtt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

PER_PROCESS = 9000


class PresenceCounter:
    """A paho subscriber to every charge point's presence: which ids said what, after ``armed``."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.armed = False
        self.seen: dict[str, list[str]] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"storm-presence-{os.getpid()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("ocpp/cp/+/Presence", 1)
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.retain:
            return
        body = json.loads(message.payload)
        with self.lock:
            if self.armed:
                self.seen.setdefault(body["clientid"], []).append(body["status"])

    def count(self, status: str) -> int:
        with self.lock:
            return sum(1 for statuses in self.seen.values() if status in statuses)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


CALLGRIND = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=no"]


def callgrind_control(pid: int, *options: str) -> None:
    subprocess.run(["callgrind_control", *options, str(pid)], check=True, capture_output=True, timeout=120)


def storm_instructions(pid: int, out: str) -> int:
    """The instructions callgrind counted in the gateway since ``--instr=on``: dumped, then read from
    the dump's ``totals:`` (or ``summary:``) line."""
    callgrind_control(pid, "--dump=storm")
    callgrind_control(pid, "--instr=off")
    total = 0
    directory = os.path.dirname(out)
    for name in os.listdir(directory):
        if name.startswith(os.path.basename(out)) and name != os.path.basename(out):
            with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith(("totals:", "summary:")):
                        total = max(total, int(line.split()[1]))
    return total


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    broker = common.Broker(work, ["max_queued_messages 0"])  # the counter must not lose what it is sent
    gateway = responder = counter = None
    clients: list[Any] = []
    try:
        broker.start()
        api_port, options = common.api_options(work)
        options.setdefault("gateway", {}).update({"default_heartbeat_interval": "1h"})
        for section, values in common.gateway_options(args.gateway_option).items():
            options.setdefault(section, {}).update(values)
        callgrind_out = work.file("callgrind.out")
        wrapper = [*CALLGRIND, f"--callgrind-out-file={callgrind_out}"] if args.callgrind else []
        gateway = common.Gateway(work, broker.port, options, src=args.gateway_src, wrapper=wrapper)
        gateway.start(timeout=300 if args.callgrind else 30)
        common.wait_until(lambda: common.port_accepts(api_port), 15, "the management API to listen")
        budget = args.cps / args.rate + args.storm_timeout + 300
        responder = common.start_responder(work, broker.port, budget)
        counter = PresenceCounter(broker.port)
        procs = args.client_procs or math.ceil(args.cps / PER_PROCESS)
        clients = common.start_loadgens(
            work,
            "storm",
            f"ws://127.0.0.1:{gateway.port}/ocpp/",
            count=args.cps,
            procs=procs,
            rate=args.rate,
            concurrency=args.concurrency,
            hold=budget,
            label="storm",
            options=["--jitter", str(args.jitter), "--storm-timeout", str(args.storm_timeout)],
        )
        opened = common.read_reports(clients, args.cps / args.rate + 180, "the clients to connect")
        time.sleep(args.settle)
        before = common.scrape_metrics(api_port)
        with counter.lock:
            counter.armed = True
        if args.callgrind:
            callgrind_control(gateway.pid, "--instr=on")
        groups = {
            "master": [gateway.pid],
            "workers": [p for p in common.descendants(gateway.pid) if p != gateway.pid],
            "loadgens": [c.pid for c in clients],
            "mosquitto": [broker.process.pid],
            "responder": [responder.pid],
            "bench": [os.getpid()],  # the presence counter's paho thread
        }
        groups_before = common.group_cpu(groups)
        cpu_before = gateway.cpu_seconds()
        split_before = common.tree_cpu_split(gateway.pid)
        busy_before = common.system_busy_seconds()
        signalled = time.monotonic()
        for client in clients:
            client.send_signal(signal.SIGUSR1)
        storms = common.read_reports(clients, args.storm_timeout + 60, "the clients to reconnect")
        wall = time.monotonic() - signalled
        storm_cores = common.cpu_cores(groups_before, common.group_cpu(groups), wall)
        cpu = gateway.cpu_seconds() - cpu_before
        split = [b - a for a, b in zip(split_before, common.tree_cpu_split(gateway.pid), strict=True)]
        busy = common.system_busy_seconds() - busy_before
        instructions = storm_instructions(gateway.pid, callgrind_out) if args.callgrind else None
        reconnected = sum(r["reconnected"] for r in storms)
        expected = sum(r["opened"] for r in opened)

        def settled() -> bool:
            scraped = common.scrape_metrics(api_port)
            outstanding = scraped.get(("ocppgw_mqtt_outstanding", ()), 1.0)
            waiting = scraped.get(("ocppgw_presence_waiting", ()), 1.0)
            return outstanding == 0 and waiting == 0 and counter.count("connected") >= reconnected

        try:
            common.wait_until(settled, 30, "the gateway's presence to be published")
        except RuntimeError:
            pass
        after = common.scrape_metrics(api_port)
        alive = gateway.process is not None and gateway.process.poll() is None
    finally:
        for client in clients:
            common.stop(client)
        common.stop(responder)
        if counter is not None:
            counter.stop()
        if gateway is not None:
            gateway.stop()
        broker.stop()
    times = sorted(t for r in storms for t in r["completion_s"])
    lost_disconnected = expected - counter.count("disconnected")
    lost_connected = reconnected - counter.count("connected")

    def delta(name: str) -> float:
        return sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == name)

    return {
        "cps": args.cps,
        "opened": expected,
        "open_failures": common.merged_failures(opened),
        "reconnected": reconnected,
        "jitter_s": args.jitter,
        "all_back_s": times[-1] if times else None,
        "p50_s": common.percentile(times, 0.5),
        "p99_s": common.percentile(times, 0.99),
        "attempt_failures": common.merged_failures(storms, "attempt_failures"),
        "retries": sum(r["retries"] for r in storms),
        "refused_by_gateway": delta("ocppgw_connections_refused_total"),
        "presence_lost": {"disconnected": lost_disconnected, "connected": lost_connected},
        "presence_deferred": delta("ocppgw_presence_deferred_total"),
        "gateway_instructions_per_reconnect": (
            round(instructions / reconnected) if instructions and reconnected else None
        ),
        "gateway_cpu_s": round(cpu, 2),
        "gateway_cpu_ms_per_reconnect": round(1000 * cpu / reconnected, 3) if reconnected else None,
        "gateway_user_system_ms_per_reconnect": (
            [round(1000 * part / reconnected, 3) for part in split] if reconnected else None
        ),
        "machine_busy_cores_during_storm": round(busy / wall, 2) if wall else None,
        "cores_during_storm": storm_cores,
        "storm_wall_s": round(wall, 2),
        "client_procs": len(storms),
        "gateway_options": args.gateway_option,
        "gateway_alive": alive,
        "target_cpu_ms_per_reconnect": 0.5,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cps", type=int, default=10000, help="charge points")
    parser.add_argument("--rate", type=float, default=800.0, help="connections opened per second at first")
    parser.add_argument("--concurrency", type=int, default=200, help="first handshakes in progress at most")
    parser.add_argument("--client-procs", type=int, default=0, help="load generators (0: one per 9,000)")
    parser.add_argument("--jitter", type=float, default=1.0, help="each reconnects after up to this, s")
    parser.add_argument("--storm-timeout", type=float, default=120.0, help="seconds allowed for the storm")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between opening and the storm")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="run the gateway under valgrind's callgrind and count its instructions per reconnect "
        "(repeatable where CPU seconds are not; ~50x slower: use a few hundred charge points)",
    )
    common.add_gateway_option(parser)
    common.add_gateway_src_option(parser)
    common.add_run_options(parser)
    args = parser.parse_args()
    return common.run_benchmark(
        "reconnect_storm", args, "ocppgw-bench-storm-", lambda work: measure(args, work)
    )


if __name__ == "__main__":
    sys.exit(main())
