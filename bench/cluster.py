"""Two gateway nodes behind HAProxy on a 3-node NATS cluster against one node (issue 12).

Starts a 3-node NATS cluster with MQTT (configs written as ``tests/integration/nats.py`` writes
them), two gateways under twistd (``gwa`` on NATS node 0, ``gwb`` on node 1; ``[mqtt] broker =
nats`` and ``[dnstream] qos = 0``, as README "Brokers" recommends there), each with two listeners:
``bench`` with ``proxy_protocol = true`` behind HAProxy (``balance roundrobin``, ``send-proxy-v2``,
``option httpchk GET /status`` on each node's API port) and ``direct`` without it. ``responder.py``
answers every Call from MQTT on NATS node 2.

(a) Closed-loop calls per second (``closed_loop.py``'s round: N charge points each sending Heartbeat
    and waiting for its CallResult) through HAProxy to both nodes, and straight to node ``gwa``'s
    ``direct`` listener; rounds alternate, the JSON gives medians and every round.
(b) Cross-node takeover latency: a charge point connects to ``gwa``, then the same id to ``gwb``;
    the time from ``gwb``'s handshake completing (the 101 read) to the close frame arriving at the
    old connection on ``gwa`` (1000 "replaced by a newer connection"); ``--takeovers`` samples,
    one at a time, p50/p99/max, how many took over 1 s (the issue's bound) and which ids' old
    connection was not closed within 10 s.

    .venv/bin/python bench/cluster.py --cps 20 --duration 3 --warmup 1 --rounds 1 --takeovers 10
    .venv/bin/python bench/cluster.py --out bench/results/cluster.json   # full size (README)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import closed_loop
import common

sys.path.insert(0, common.REPO)
from tests.integration.nats import NATS_SERVER, node_config

HAPROXY = "/usr/sbin/haproxy"
REPLACED = (1000, "replaced by a newer connection")


class Nats:
    """Three ``nats-server`` processes in one cluster, MQTT on ``mqtt_ports``."""

    def __init__(self, work: common.Workdir) -> None:
        self.work = work
        self.client_ports = [common.free_port() for _ in range(3)]
        self.cluster_ports = [common.free_port() for _ in range(3)]
        self.mqtt_ports = [common.free_port() for _ in range(3)]
        self.processes: list[Any] = []

    def start(self, timeout: float = 60.0) -> None:
        for index in range(3):
            conf = self.work.file(f"nats{index}.conf")
            with open(conf, "w", encoding="utf-8") as f:
                f.write(
                    node_config(index, self.work.path, self.client_ports, self.cluster_ports, self.mqtt_ports)
                )
            log = open(self.work.file(f"nats{index}.log"), "ab")
            self.processes.append(common.spawn([NATS_SERVER, "-c", conf], log=log))
            log.close()
        common.wait_until(
            lambda: all(common.port_accepts(p) for p in self.mqtt_ports), timeout, "NATS MQTT ports"
        )
        for port in self.mqtt_ports:  # JetStream ready: an MQTT session with a subscription is taken
            common.wait_until(
                lambda port=port: _mqtt_session(port), timeout, f"an MQTT session on {port}", 0.5
            )

    def stop(self) -> None:
        for process in self.processes:
            common.stop(process)


def _mqtt_session(port: int) -> bool:
    from paho.mqtt import client as mqtt

    done: list[bool] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{port}")
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("ready/#", 1) if not rc.is_failure else None
    client.on_subscribe = lambda c, u, mid, codes, p: done.append(not codes[0].is_failure)
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except OSError:
        return False
    client.loop_start()
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    return bool(done and done[0])


def start_node(work: common.Workdir, name: str, mqtt_port: int, args: argparse.Namespace) -> dict[str, Any]:
    """Gateway ``name`` on ``mqtt_port``: listeners ``bench`` (PROXY protocol) and ``direct``, the API."""
    api_port, options = common.api_options(work)
    direct = common.free_port()
    options["gateway"] = {"node_name": name, "default_heartbeat_interval": "1h"}
    options["mqtt"] = {"broker": "nats", "client_id": f"ocppgw-bench-{name}-{os.getpid()}"}
    options["listeners.ws.bench"] = {"proxy_protocol": "true"}
    options["listeners.ws.direct"] = {"bind": f"127.0.0.1:{direct}"}
    options["dnstream"] = {"qos": "0"}  # README "Brokers": on NATS; --gateway-option dnstream.qos=1 for QoS 1
    for section, values in common.gateway_options(args.gateway_option).items():
        options.setdefault(section, {}).update(values)
    gateway = common.Gateway(work, mqtt_port, options, label=name, src=args.gateway_src)
    gateway.start()
    common.wait_until(lambda: common.port_accepts(api_port), 15, f"{name}'s API to listen")
    return {"gateway": gateway, "api": api_port, "direct": direct}


def start_haproxy(work: common.Workdir, nodes: list[dict[str, Any]]) -> tuple[Any, int]:
    port = common.free_port()
    servers = [
        f"    server {name} 127.0.0.1:{node['gateway'].port} send-proxy-v2 check port {node['api']} "
        "inter 1s fall 2 rise 1"
        for name, node in zip(("gwa", "gwb"), nodes, strict=True)
    ]
    lines = [
        "global", "    maxconn 9000",  # the open-file limit here is 20,000: two per connection
        "defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 90s",
        "    timeout server 90s", "    timeout tunnel 1h",
        "frontend ocpp", f"    bind 127.0.0.1:{port}", "    default_backend gateways",
        "backend gateways", "    balance roundrobin", "    option httpchk GET /status",
        "    http-check expect status 200", *servers,
    ]  # fmt: skip
    conf = work.file("haproxy.cfg")
    with open(conf, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    log = open(work.file("haproxy.log"), "ab")
    process = common.spawn([HAPROXY, "-f", conf, "-db"], log=log)
    log.close()
    common.wait_until(lambda: common.port_accepts(port), 10, "haproxy to listen")
    return process, port


async def takeovers(a_port: int, b_port: int, samples: int) -> dict[str, Any]:
    """``samples`` cross-node takeovers, one at a time."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    times: list[float] = []
    wrong: dict[str, int] = {}
    late: list[str] = []  # the charge points whose old connection stayed open
    for i in range(samples):
        cid = f"TKO{i}"
        old = await connect(f"ws://127.0.0.1:{a_port}/ocpp/{cid}", subprotocols=["ocpp1.6"], open_timeout=10)
        await asyncio.sleep(0.05)  # the claim of the first connection has gone round
        new = await connect(f"ws://127.0.0.1:{b_port}/ocpp/{cid}", subprotocols=["ocpp1.6"], open_timeout=10)
        handshake_done = time.perf_counter()
        try:
            await asyncio.wait_for(old.recv(), 10)
            wrong["message_instead_of_close"] = wrong.get("message_instead_of_close", 0) + 1
        except ConnectionClosed:
            times.append(time.perf_counter() - handshake_done)
            if old.close_code != REPLACED[0] or old.close_reason != REPLACED[1]:
                key = f"closed {old.close_code} {old.close_reason}"
                wrong[key] = wrong.get(key, 0) + 1
        except TimeoutError:
            wrong["not_closed_within_10s"] = wrong.get("not_closed_within_10s", 0) + 1
            late.append(cid)
        await old.close()
        await new.close()
    times.sort()

    def ms(fraction: float) -> float | None:
        value = common.percentile(times, fraction)
        return None if value is None else round(value * 1000, 3)

    return {"samples": len(times), "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0),
            "over_1s": sum(t > 1.0 for t in times), "errors": wrong, "not_closed": late}  # fmt: skip


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    nats = Nats(work)
    nodes: list[dict[str, Any]] = []
    haproxy = responder = None
    try:
        nats.start()
        for name, index in (("gwa", 0), ("gwb", 1)):
            nodes.append(start_node(work, name, nats.mqtt_ports[index], args))
        haproxy, proxy_port = start_haproxy(work, nodes)
        responder = common.start_responder(
            work, nats.mqtt_ports[2], closed_loop.lifetime(args, 2 * args.rounds) + args.takeovers,
            "--qos", str(args.responder_qos),
        )  # fmt: skip
        time.sleep(3)  # HAProxy's first health checks (rise 1, inter 1s)
        watched = {"gwa": nodes[0]["gateway"].pid, "gwb": nodes[1]["gateway"].pid}
        setups = {
            "haproxy_two_nodes": (f"ws://127.0.0.1:{proxy_port}/ocpp/", {**watched, "haproxy": haproxy.pid}),
            "one_node": (f"ws://127.0.0.1:{nodes[0]['direct']}/ocpp/", {"gwa": watched["gwa"]}),
        }
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
        for r in range(args.rounds):
            for name, (url, pids) in setups.items():
                label = f"{'lb' if name.startswith('haproxy') else 'one'}{r}"
                rounds[name].append(closed_loop.run_load(args, work, label, url, pids))
        takeover = asyncio.run(takeovers(nodes[0]["direct"], nodes[1]["direct"], args.takeovers))
    finally:
        common.stop(responder)
        common.stop(haproxy)
        for node in nodes:
            node["gateway"].stop()
        nats.stop()

    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in rounds[name] if r[key] is not None]
        return common.median(values) if values else None

    return {
        "settings": {**closed_loop.settings(args), "takeovers": args.takeovers},
        "calls_per_s": {name: median(name, "calls_per_s") for name in rounds},
        "p50_ms": {name: median(name, "p50_ms") for name in rounds},
        "p99_ms": {name: median(name, "p99_ms") for name in rounds},
        "two_nodes_over_one": (
            round(median("haproxy_two_nodes", "calls_per_s") / median("one_node", "calls_per_s"), 3)
            if median("one_node", "calls_per_s")
            else None
        ),
        "takeover": takeover,
        "rounds": rounds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    closed_loop.add_options(parser)
    parser.set_defaults(pin=False, rounds=3)
    parser.add_argument("--takeovers", type=int, default=200, help="cross-node takeover samples")
    common.add_gateway_src_option(parser)
    args = parser.parse_args()
    args.pin = False  # two gateways and HAProxy: no core to give each
    return common.run_benchmark("cluster", args, "ocppgw-bench-cluster-", lambda work: measure(args, work))


if __name__ == "__main__":
    sys.exit(main())
