"""PROXY protocol behind a real HAProxy (``send-proxy`` and ``send-proxy-v2``), ws and wss.

HAProxy connects to the gateway from 127.0.0.1; the charge points connect to HAProxy from
127.0.0.2, so the gateway reports 127.0.0.2:<client port> only if it takes the header's address.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.devpki import client_context, make_dev_certs
from tests.integration.harness import ChargePoint, Client, GatewayHarness
from tests.integration.test_wss import RecordingAuthenticator
from tests.support import free_port, poll_until

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
CLIENT_HOST = "127.0.0.2"


class HAProxy:
    """A private ``haproxy -db`` in TCP mode: one frontend per (name, backend port, send-proxy option)."""

    def __init__(self, testcase: TestCase) -> None:
        if not os.access(HAPROXY, os.X_OK):
            testcase.fail(f"{HAPROXY} not installed (scripts/test installs it)")
        self.directory = tempfile.mkdtemp(prefix="ocppgw-haproxy-")
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        testcase.addCleanup(self.stop)

    def start(self, routes: dict[str, tuple[int, str]], http: bool = False) -> Any:
        """``routes``: frontend name -> (gateway port, ``send-proxy``, ``send-proxy-v2`` or nothing).

        ``http``: HTTP mode, adding an ``X-Forwarded-For`` header, as a TLS-terminating proxy would.
        """
        lines = [
            "global",
            "    maxconn 200",
            "defaults",
            *(["    mode http", "    option forwardfor"] if http else ["    mode tcp"]),
            "    timeout connect 5s",
            "    timeout client 60s",
            "    timeout server 60s",
        ]
        for name, (gateway_port, option) in routes.items():
            port = self.ports[name] = free_port()
            lines += [
                f"frontend fe_{name}",
                f"    bind 127.0.0.1:{port}",
                f"    default_backend be_{name}",
                f"backend be_{name}",
                f"    server gw 127.0.0.1:{gateway_port} {option}",
            ]
        return self.run(lines)

    def run(self, lines: list[str]) -> Any:
        """Start haproxy on the config ``lines``; fires once every port in ``ports`` listens."""
        config = os.path.join(self.directory, "haproxy.cfg")
        with open(config, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        self.log = os.path.join(self.directory, "haproxy.log")
        with open(self.log, "ab") as log:
            self._process = subprocess.Popen(
                [HAPROXY, "-f", config, "-db"], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        return poll_until(self._listening, timeout=10, description="haproxy listening")

    def _listening(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            with open(self.log, encoding="utf-8", errors="replace") as f:
                raise RuntimeError(f"haproxy exited with {self._process.returncode}:\n{f.read()[-2000:]}")
        wanted = {port for port in self.ports.values()}
        with open("/proc/net/tcp", encoding="ascii") as f:  # listening sockets; no probe connection
            listening = {int(line.split()[1].split(":")[1], 16) for line in f if line.split()[3] == "0A"}
        return wanted <= listening

    def stop(self) -> Any:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)

            def wait() -> None:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

            return deferToThread(wait).addBoth(lambda _: shutil.rmtree(self.directory, ignore_errors=True))
        shutil.rmtree(self.directory, ignore_errors=True)
        return None


def _connect_from(port: int, host: str = CLIENT_HOST) -> socket.socket:
    """A non-blocking socket from ``host`` connected to 127.0.0.1:``port`` (blocking: run it in a thread)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


class _ProxyTestCase(TestCase):
    extra_config = "[listeners.ws.default]\nproxy_protocol = true\nproxy_protocol_timeout = 1s\n"

    @inlineCallbacks
    def setUp(self) -> Any:
        self.authenticator = RecordingAuthenticator()
        self.gw = GatewayHarness(self, self.extra_config, authenticator=self.authenticator)
        yield self.gw.start()
        self.haproxy = HAProxy(self)
        yield self.haproxy.start(self.routes())

    def routes(self) -> dict[str, tuple[int, str]]:
        return {"v1": (self.gw.port, "send-proxy"), "v2": (self.gw.port, "send-proxy-v2")}

    def connect_via(self, frontend: str, cid: str, scheme: str = "ws", **kwargs: Any) -> Any:
        """A ChargePoint from 127.0.0.2 through ``frontend``; fires with (Client, its local port)."""
        port = self.haproxy.ports[frontend]
        loop = self.gw.loop

        async def open_() -> tuple[Client, int]:
            import websockets

            sock = await loop.loop.run_in_executor(None, _connect_from, port)
            local_port = sock.getsockname()[1]
            websocket = await websockets.connect(
                f"{scheme}://localhost:{port}/ocpp/{cid}",
                sock=sock,
                subprotocols=["ocpp1.6"],
                open_timeout=10,
                **kwargs,
            )
            charge_point = ChargePoint(cid, websocket, response_timeout=10)
            return Client(loop, websocket, charge_point), local_port

        d = loop.run(open_())

        def track(result: tuple[Client, int]) -> tuple[Client, int]:
            self.gw.clients.append(result[0])
            return result

        return d.addCallback(track)

    @inlineCallbacks
    def assertBootsWithPeer(self, frontend: str, cid: str, scheme: str = "ws", **kwargs: Any) -> Any:
        """``cid`` connects through HAProxy and boots; presence and Credentials carry 127.0.0.2:<port>."""
        client, local_port = yield self.connect_via(frontend, cid, scheme, **kwargs)
        expected = f"{CLIENT_HOST}:{local_port}"
        result = yield self.gw.boot(client, cid)
        self.assertEqual(result.status, "Accepted")
        (presence,) = yield self.gw.wait_messages(f"ocpp/cp/{cid}/Presence", 1)
        self.assertEqual((presence["status"], presence["peer"]), ("connected", expected))
        self.assertEqual([c.peer for c in self.authenticator.seen if c.cid == cid], [expected])
        return client


class WsProxyTests(_ProxyTestCase):
    def test_v1(self) -> Any:
        """send-proxy (v1): the charge point's own address is reported, not HAProxy's."""
        return self.assertBootsWithPeer("v1", "CPV1")

    def test_v2(self) -> Any:
        """send-proxy-v2 (binary header): the charge point's own address is reported."""
        return self.assertBootsWithPeer("v2", "CPV2")

    @inlineCallbacks
    def test_no_header_closed(self) -> Any:
        """A direct client that sends nothing is closed after proxy_protocol_timeout (1s)."""
        sock = yield deferToThread(_connect_from, self.gw.port, "127.0.0.1")
        self.addCleanup(sock.close)
        sock.setblocking(True)
        sock.settimeout(10)
        data = yield deferToThread(_recv_until_closed, sock)
        self.assertEqual(data, b"")
        metrics = self.gw.service.metrics
        self.assertEqual(
            metrics.value("handshakes_refused", status="proxy", reason="proxy_header_timeout"), 1
        )

    @inlineCallbacks
    def test_garbage_header_closed(self) -> Any:
        """A WebSocket upgrade without a PROXY header is closed; a charge point through HAProxy goes on."""
        client = yield self.assertBootsWithPeer("v1", "CPOK")
        sock = yield deferToThread(_connect_from, self.gw.port, "127.0.0.1")
        self.addCleanup(sock.close)
        sock.setblocking(True)
        sock.settimeout(10)
        yield deferToThread(sock.sendall, b"GET /ocpp/CPX HTTP/1.1\r\nHost: x\r\n\r\n")
        data = yield deferToThread(_recv_until_closed, sock)
        self.assertEqual(data, b"")
        bad = yield deferToThread(_connect_from, self.gw.port, "127.0.0.1")
        self.addCleanup(bad.close)
        bad.setblocking(True)
        bad.settimeout(10)
        yield deferToThread(bad.sendall, b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n")
        data = yield deferToThread(_recv_until_closed, bad)
        self.assertEqual(data, b"")
        self.assertEqual(self.authenticator.seen[-1].cid, "CPOK")
        metrics = self.gw.service.metrics
        self.assertEqual(
            metrics.value("handshakes_refused", status="proxy", reason="proxy_header_invalid"), 2
        )
        yield client.send('[2,"hb-1","Heartbeat",{}]')
        messages = yield self.gw.wait_messages("ocpp/cp/CPOK", 2)
        self.assertEqual(messages[1]["Action"], "Heartbeat")


def _recv_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes (blocking: run it in a thread)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class WssProxyTests(_ProxyTestCase):
    """wss behind HAProxy with TLS passed through: TCP -> PROXY header -> TLS -> WebSocket."""

    @inlineCallbacks
    def setUp(self) -> Any:
        self.pki = make_dev_certs(self.mktemp(), ["CP1"])
        self.extra_config = (
            "[listeners.wss.tls]\nbind = 127.0.0.1:0\nproxy_protocol = true\nproxy_protocol_timeout = 1s\n"
            f"certfile = {self.pki.server_cert}\nkeyfile = {self.pki.server_key}\n"
        )
        yield super().setUp()

    def routes(self) -> dict[str, tuple[int, str]]:
        port = self.gw.service.getServiceNamed("wss.tls").port.getHost().port
        return {"v1": (port, "send-proxy"), "v2": (port, "send-proxy-v2")}

    def test_v1(self) -> Any:
        """wss with send-proxy: the TLS handshake follows the header; the client's address is reported."""
        return self.assertBootsWithPeer(
            "v1", "CPS1", "wss", ssl=client_context(self.pki.ca_cert), server_hostname="localhost"
        )

    def test_v2(self) -> Any:
        """wss with send-proxy-v2."""
        return self.assertBootsWithPeer(
            "v2", "CPS2", "wss", ssl=client_context(self.pki.ca_cert), server_hostname="localhost"
        )
