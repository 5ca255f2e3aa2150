"""TLS at the edge: wss next to plain ws, in one run: handshakes per second and memory per idle connection.

Makes a development PKI in the run's work directory (``certs/make_dev_certs.py``)
and starts a private Mosquitto, ``responder.py`` and the gateway (``twistd -n
ocppgw``) with a ``[listeners.ws.bench]`` and a ``[listeners.wss.bench]``
listener (the server certificate; ``--client-certs``: verify_peer and
fail_if_no_peer_cert, and every client presents a certificate), ping_interval
and default_heartbeat_interval 1h, and max_conn_rate = infinity on both
listeners, so that the gateway's limit (1000/s by default) caps nothing.

Phase "handshakes": ``--rounds`` rounds alternating ws and wss; each round
``loadgen.py handshakes`` opens ``--handshakes`` connections, at most
``--concurrency`` in progress, each making the opening handshake (TCP, then a
full TLS handshake for wss, then WebSocket) and the closing handshake.  Per
side: handshakes per second, p50/p99 connect time, and the gateway's CPU per
handshake (medians over the rounds).

Phase "idle memory": the gateway is restarted for ws, then again for wss (RSS
never shrinks after connections close, so each side gets a fresh process), and
``--cps`` idle connections are opened as ``idle_memory.py`` does: VmRSS before
and after, (after - before) / N.

Prints one JSON object: per side figures, the wss/ws ratios, the target
(< 60 KB per idle wss connection) and whether it is met, and versions.

    .venv/bin/python bench/tls_edge.py [--handshakes 1000] [--cps 5000] [--tls-version 1.3] [--client-certs]
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import time
from importlib import metadata
from typing import Any, Protocol

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

MAKE_DEV_CERTS = os.path.join(common.REPO, "certs", "make_dev_certs.py")
CLIENT_CID = "bench-client"
TARGET_KB = 60
SIDES = ("ws", "wss")


def make_certs(work: common.Workdir, client_certs: bool) -> dict[str, str]:
    """The dev CA, server certificate and (with ``client_certs``) one client certificate, in the work dir."""
    directory = work.file("certs")
    argv = [common.PYTHON, MAKE_DEV_CERTS, "--out", directory, *([CLIENT_CID] if client_certs else [])]
    made = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if made.returncode != 0:
        raise RuntimeError(f"make_dev_certs.py failed ({made.returncode}): {made.stderr.strip()}")
    names = {"ca": "ca.pem", "cert": "server.pem", "key": "server.key"}
    if client_certs:
        names.update(client_cert=f"{CLIENT_CID}.pem", client_key=f"{CLIENT_CID}.key")
    return {what: os.path.join(directory, name) for what, name in names.items()}


class Edge:
    """The broker and responder for the whole run, and gateways started and stopped on them."""

    def __init__(self, args: argparse.Namespace, work: common.Workdir) -> None:
        self.args = args
        self.work = work
        self.certs = make_certs(work, args.client_certs)
        self.broker = common.Broker(work)
        self.responder: Any = None
        self.gateway: common.Gateway | None = None
        self.wss_port = 0
        # what each client passes to ``loadgen.py`` for wss
        self.tls_options = ["--tls-version", args.tls_version, "--cafile", self.certs["ca"]]
        if args.client_certs:
            self.tls_options += [
                "--certfile",
                self.certs["client_cert"],
                "--keyfile",
                self.certs["client_key"],
            ]

    def start(self, lifetime: float) -> None:
        self.broker.start()
        self.responder = common.start_responder(self.work, self.broker.port, lifetime)

    def start_gateway(self, label: str) -> common.Gateway:
        self.wss_port = common.free_port()
        wss = {
            "bind": f"127.0.0.1:{self.wss_port}",
            "certfile": self.certs["cert"],
            "keyfile": self.certs["key"],
            "max_conn_rate": "infinity",
        }
        if self.args.client_certs:
            wss.update(cacertfile=self.certs["ca"], verify="verify_peer", fail_if_no_peer_cert="true")
        options = {
            "gateway": {"ping_interval": "1h", "default_heartbeat_interval": "1h"},
            "listeners.ws.bench": {"max_conn_rate": "infinity"},
            "listeners.wss.bench": wss,
        }
        self.gateway = common.Gateway(self.work, self.broker.port, options, label=label)
        self.gateway.start()
        common.wait_until(lambda: common.port_accepts(self.wss_port), 10, "the gateway's wss listener")
        return self.gateway

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.gateway = None

    def url(self, side: str) -> str:
        assert self.gateway is not None
        port = self.wss_port if side == "wss" else self.gateway.port
        return f"{side}://127.0.0.1:{port}/ocpp/"

    def loadgen_options(self, side: str) -> list[str]:
        return self.tls_options if side == "wss" else []

    def stop(self) -> None:
        self.stop_gateway()
        common.stop(self.responder)
        self.broker.stop()


class HandshakeTarget(Protocol):
    """What ``handshake_round`` needs of a set-up (``Edge``, or ``workers_compare.py``'s stacks)."""

    args: argparse.Namespace
    work: common.Workdir
    gateway: common.Gateway | None

    def url(self, side: str) -> str: ...

    def loadgen_options(self, side: str) -> list[str]: ...


def handshake_round(edge: HandshakeTarget, side: str, label: str) -> dict[str, Any]:
    """One round of ``--handshakes`` connections to one side; the gateway's CPU over the round."""
    args, work, gateway = edge.args, edge.work, edge.gateway
    assert gateway is not None
    pids = gateway.pids()  # with [gateway] workers, the master and its workers

    def fds() -> int:
        return sum(common.open_fds(pid) for pid in pids)

    fds_before = fds()
    cpu_before = gateway.cpu_seconds()
    busy_before = common.system_busy_seconds()
    overflows_before = common.listen_overflows()
    wall_before = time.monotonic()
    budget = 60 + args.handshakes / 20
    parts = common.shares(args.handshakes, args.handshake_procs)
    clients = []
    try:
        for i, (first, count) in enumerate(parts):
            log = open(work.file(f"loadgen-{label}-{i}.log"), "ab")
            argv = [common.PYTHON, common.LOADGEN, "handshakes", "--url", edge.url(side)]
            argv += ["--prefix", f"{label}-{i}-cp", "--first", str(first), "--count", str(count)]
            argv += ["--concurrency", str(max(1, args.concurrency // len(parts)))]
            argv += edge.loadgen_options(side)
            clients.append(common.spawn(argv, log=log, stdout=subprocess.PIPE))
            log.close()
        reports = []
        for client in clients:
            remaining = max(1.0, wall_before + budget - time.monotonic())
            reports.append(json.loads(common.read_line(client.stdout, remaining, f"{label}: the clients")))
    finally:
        for client in clients:
            common.stop(client)
    # The gateway ends each session (presence, unsubscribe) once the socket is closed: count that too.
    try:
        common.wait_until(lambda: fds() <= fds_before, 30, f"{label}: the gateway to close")
        closed = True
    except RuntimeError:
        closed = False
    used = gateway.cpu_seconds() - cpu_before
    wall = time.monotonic() - wall_before
    busy = common.system_busy_seconds() - busy_before
    samples = sorted(s for r in reports for s in r["connect_s"])
    done = len(samples)
    span = max(r["t_end"] for r in reports) - min(r["t_begin"] for r in reports)
    failures: dict[str, int] = {}
    for report in reports:
        for key, value in report["failures"].items():
            failures[key] = failures.get(key, 0) + value

    def ms(fraction: float) -> float | None:
        value = common.percentile(samples, fraction)
        return None if value is None else round(value * 1000, 2)

    client_cpu = sum(r["cpu_s"] for r in reports)
    return {
        "handshakes": done,
        "failures": failures,
        "handshakes_per_s": round(done / span, 1) if span > 0 else None,
        "p50_ms": ms(0.50),
        "p99_ms": ms(0.99),
        "max_ms": ms(1.0),
        "seconds": round(span, 3),
        "gateway_cpu_us_per_handshake": round(1e6 * used / done, 1) if done else None,
        "gateway_cpu_cores": round(used / span, 3) if span > 0 else None,
        "client_cpu_us_per_handshake": round(1e6 * client_cpu / done, 1) if done else None,
        "client_cpu_cores": round(client_cpu / span, 3) if span > 0 else None,
        "busy_cores": round(busy / wall, 3),
        "listen_overflows": common.listen_overflows() - overflows_before,
        "gateway_closed_all": closed,
    }


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds; the per-round figures stay in ``rounds``."""

    def med(key: str) -> float | None:
        values = [r[key] for r in rounds if r[key] is not None]
        return round(common.median(values), 3) if values else None

    keys = ("handshakes_per_s", "p50_ms", "p99_ms", "gateway_cpu_us_per_handshake")
    keys += ("gateway_cpu_cores", "client_cpu_us_per_handshake", "client_cpu_cores")
    return {
        **{key: med(key) for key in keys},
        "failures": sum(sum(r["failures"].values()) for r in rounds),
        "listen_overflows": sum(r["listen_overflows"] for r in rounds),
        "rounds": rounds,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def measure(args: argparse.Namespace, work: common.Workdir) -> dict[str, Any]:
    edge = Edge(args, work)
    hs_budget = 2 * args.rounds * (90 + args.handshakes / 20)
    idle_budget = 2 * (args.cps / args.rate + 240)
    rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    idle: dict[str, dict[str, Any]] = {}
    try:
        edge.start(hs_budget + idle_budget + 120)
        edge.start_gateway("-handshakes")
        for n in range(args.rounds):
            for side in SIDES:
                rounds[side].append(handshake_round(edge, side, f"hs-{side}{n}"))
        edge.stop_gateway()
        for side in SIDES:
            gateway = edge.start_gateway(f"-idle-{side}")
            overflows_before = common.listen_overflows()
            idle[side] = common.idle_connections(
                work,
                gateway,
                edge.url(side),
                count=args.cps,
                rate=args.rate,
                concurrency=args.idle_concurrency,
                procs=args.client_procs,
                settle=args.settle,
                label=f"idle-{side}",
                loadgen_options=edge.loadgen_options(side),
            )
            idle[side]["listen_overflows"] = common.listen_overflows() - overflows_before
            opened = idle[side]["opened"]
            cpu = idle[side]["gateway_cpu_s_while_opening"]
            idle[side]["gateway_cpu_ms_per_connection"] = round(1e3 * cpu / opened, 2) if opened else None
            edge.stop_gateway()
    finally:
        edge.stop()
    handshakes = {side: summarize(rounds[side]) for side in SIDES}
    ws, wss = handshakes["ws"], handshakes["wss"]
    handshakes["ratio_wss_to_ws"] = {
        key: ratio(wss[key], ws[key])
        for key in ("handshakes_per_s", "p50_ms", "p99_ms", "gateway_cpu_us_per_handshake")
    }
    if wss["gateway_cpu_us_per_handshake"] is not None and ws["gateway_cpu_us_per_handshake"] is not None:
        tls_cpu = wss["gateway_cpu_us_per_handshake"] - ws["gateway_cpu_us_per_handshake"]
        handshakes["gateway_tls_cpu_us_per_handshake"] = round(tls_cpu, 1)
    idle["ratio_wss_to_ws"] = {
        key: ratio(idle["wss"][key], idle["ws"][key])
        for key in ("kb_per_connection", "gateway_cpu_ms_per_connection")
    }
    per = idle["wss"]["kb_per_connection"]
    return {
        "settings": {
            "tls_version": args.tls_version,
            "client_certs": args.client_certs,
            "handshakes_per_round": args.handshakes,
            "rounds_per_side": args.rounds,
            "handshake_concurrency": args.concurrency,
            "handshake_client_procs": args.handshake_procs,
            "idle_connections_per_side": args.cps,
            "idle_rate_per_s": args.rate,
            "idle_concurrency": args.idle_concurrency,
            "idle_client_procs": args.client_procs,
            "gateway_max_conn_rate": "infinity",
            "gateway_ping_interval": "1h",
        },
        "handshakes": handshakes,
        "idle_memory": idle,
        "target_kb_per_wss_connection": TARGET_KB,
        "target_met": per is not None and per < TARGET_KB and idle["wss"]["opened"] == args.cps,
    }


def tls_versions() -> dict[str, Any]:
    """The TLS libraries: the gateway's (pyOpenSSL, via Twisted) and the clients' (Python's ssl)."""
    out: dict[str, Any] = {"client_openssl": ssl.OPENSSL_VERSION}
    for name in ("pyOpenSSL", "cryptography"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        from OpenSSL import SSL  # the gateway's TLS library, for the record only

        out["gateway_openssl"] = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    except ImportError:
        out["gateway_openssl"] = None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshakes", type=int, default=1000, help="connections per handshake round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="handshake rounds per side, alternating ws, wss"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=50,
        help="handshakes in progress at most, in all; above 50 (the gateway's listen backlog) SYNs can be "
        "dropped and retried after 1 s (listen_overflows in the JSON)",
    )
    parser.add_argument("--handshake-procs", type=int, default=1, help="client processes for handshakes")
    parser.add_argument("--cps", type=int, default=5000, help="idle connections per side")
    parser.add_argument(
        "--rate", type=float, default=500.0, help="idle connections opened per second at most"
    )
    parser.add_argument(
        "--idle-concurrency", type=int, default=200, help="idle: handshakes in progress at most"
    )
    parser.add_argument("--client-procs", type=int, default=2, help="client processes for idle connections")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before each RSS reading")
    parser.add_argument(
        "--tls-version", choices=("1.3", "1.2"), default="1.3", help="TLS version the clients use"
    )
    parser.add_argument(
        "--client-certs",
        action="store_true",
        help="wss listener with verify_peer and fail_if_no_peer_cert; every client presents a certificate",
    )
    common.add_run_options(parser)
    args = parser.parse_args()
    return common.run_benchmark(
        "tls_edge", args, "ocppgw-bench-tls-", lambda work: measure(args, work), tls_versions
    )


if __name__ == "__main__":
    sys.exit(main())
