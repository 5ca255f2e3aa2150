"""A private 3-node NATS cluster with MQTT (and the JetStream it needs) on loopback, for tests.

Each node gets its own config: a client port, the cluster routes to the others, ``mqtt { listen }``,
``jetstream { store_dir }`` and a ``server_name``, all on free ports in a temporary directory. The
cluster is ready once every node's MQTT port accepts an MQTT session (JetStream has elected its
metadata leader and made the MQTT streams): ``MqttRecorder`` connects and subscribes to find out.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from typing import Any

from twisted.internet.defer import DeferredList, inlineCallbacks

from tests.support import MqttRecorder, free_port, poll_until, port_accepts

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def node_config(
    index: int, directory: str, client_ports: list[int], cluster_ports: list[int], mqtt_ports: list[int]
) -> str:
    """The config of node ``index`` of a loopback cluster (also used by ``bench/cluster.py``)."""
    routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in cluster_ports)
    store = os.path.join(directory, f"js{index}")
    return (
        f"server_name: n{index}\n"
        f"listen: 127.0.0.1:{client_ports[index]}\n"
        f'jetstream {{ store_dir: "{store}" }}\n'
        f"cluster {{ name: ocppgw, listen: 127.0.0.1:{cluster_ports[index]}, routes: [{routes}] }}\n"
        f"mqtt {{ listen: 127.0.0.1:{mqtt_ports[index]} }}\n"
        "logtime: true\n"
    )


def jetstream_consumer_filters(port: int, stream: str = "$MQTT_msgs", timeout: float = 5.0) -> list[str]:
    """The subject filters of ``stream``'s JetStream consumers, asked over NATS's client protocol on
    ``port`` (blocking: run it in a thread). On NATS every QoS 1 MQTT subscription to ``a/b`` is a
    consumer of ``$MQTT_msgs`` filtering ``$MQTT.msgs.a.b``."""
    inbox = "_INBOX.ocppgw-test"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":false}\r\n'
            + f"SUB {inbox} 1\r\nPUB $JS.API.CONSUMER.LIST.{stream} {inbox} 2\r\n{{}}\r\n".encode()
        )
        data = b""
        while True:
            _, found, rest = data.partition(f"MSG {inbox} 1 ".encode())
            size, crlf, body = rest.partition(b"\r\n")
            if found and crlf and len(body) >= int(size):
                answer = json.loads(body[: int(size)])
                return sorted(c["config"].get("filter_subject", "") for c in answer["consumers"] or [])
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"NATS on {port} closed the connection: {data[-200:]!r}")
            data += chunk


class NatsCluster:
    """Three ``nats-server`` processes forming cluster ``ocppgw``; ``mqtt_ports[i]`` is node i's MQTT."""

    def __init__(self, testcase: Any, size: int = 3) -> None:
        if not os.access(NATS_SERVER, os.X_OK):
            testcase.fail(f"{NATS_SERVER} not installed (Debian package nats-server)")
        self.directory = tempfile.mkdtemp(prefix="ocppgw-nats-")
        self.client_ports = [free_port() for _ in range(size)]
        self.cluster_ports = [free_port() for _ in range(size)]
        self.mqtt_ports = [free_port() for _ in range(size)]
        self._processes: list[subprocess.Popen[bytes]] = []
        testcase.addCleanup(self.stop)

    def config(self, index: int) -> str:
        return node_config(index, self.directory, self.client_ports, self.cluster_ports, self.mqtt_ports)

    def log_tail(self, index: int, lines: int = 20) -> str:
        with open(os.path.join(self.directory, f"n{index}.log"), encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    @inlineCallbacks
    def start(self, timeout: float = 60.0) -> Any:
        """Start every node; fires once each takes an MQTT session."""
        for index in range(len(self.mqtt_ports)):
            path = os.path.join(self.directory, f"n{index}.conf")
            with open(path, "w", encoding="utf-8") as f:
                f.write(self.config(index))
            with open(os.path.join(self.directory, f"n{index}.log"), "ab") as log:
                self._processes.append(
                    subprocess.Popen(
                        [NATS_SERVER, "-c", path],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

        def listening() -> bool:
            for index, process in enumerate(self._processes):
                if process.poll() is not None:
                    raise RuntimeError(f"nats-server n{index} exited:\n{self.log_tail(index)}")
            return all(port_accepts(port) for port in self.mqtt_ports)

        yield poll_until(listening, timeout=timeout, description="NATS MQTT ports accepting")
        probes = [
            MqttRecorder("127.0.0.1", port, "ready/#", client_id=f"probe-{port}") for port in self.mqtt_ports
        ]
        try:
            yield DeferredList([p.start(timeout) for p in probes], fireOnOneErrback=True, consumeErrors=True)
        finally:
            yield DeferredList([p.stop() for p in probes])

    def stop_node(self, index: int) -> None:
        """Stop node ``index`` (SIGTERM, waited for): whatever is connected to it loses its broker."""
        process = self._processes[index]
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> Any:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        for index in range(len(self.mqtt_ports)):  # kept in the working directory (_trial_temp)
            log = os.path.join(self.directory, f"n{index}.log")
            if os.path.exists(log):
                shutil.copy(log, f"{os.path.basename(self.directory)}-n{index}.log")
        shutil.rmtree(self.directory, ignore_errors=True)
