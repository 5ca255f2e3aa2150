"""Two gateway nodes (each on its own node of a 3-node NATS cluster) behind a real HAProxy, as
``deploy/haproxy.cfg`` sets it up: round robin, ``send-proxy-v2``, health checked on each node's
``GET /status``. Charge points land on both nodes with their own address; a node whose broker link
is down answers 503 and gets no new connection. ``deploy/haproxy.cfg`` itself passes ``haproxy -c``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.integration.harness import Client, GatewayHarness
from tests.integration.test_cluster import ClusterTestCase
from tests.integration.test_proxy_protocol import CLIENT_HOST, HAPROXY, HAProxy, _connect_from
from tests.support import free_port, poll_until

DEPLOY_CONFIG = Path(__file__).parents[2] / "deploy" / "haproxy.cfg"
PROXIED = "[listeners.ws.default]\nproxy_protocol = true\nproxy_protocol_timeout = 2s\n"


class DeployConfigTests(TestCase):
    def test_deploy_config_is_valid(self) -> Any:
        """``haproxy -c`` accepts deploy/haproxy.cfg as shipped (its addresses are examples)."""
        if not os.access(HAPROXY, os.X_OK):
            self.fail(f"{HAPROXY} not installed (scripts/test installs it)")
        result = subprocess.run(
            [HAPROXY, "-c", "-f", str(DEPLOY_CONFIG)], capture_output=True, text=True, timeout=30
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("send-proxy-v2", DEPLOY_CONFIG.read_text(encoding="utf-8"))


class BalancedTests(ClusterTestCase):
    @inlineCallbacks
    def start_balanced(self) -> Any:
        self.a = yield self.node("gwa", 0, PROXIED)
        self.b = yield self.node("gwb", 1, PROXIED)
        yield self.members_see(self.a, self.b)
        self.haproxy = HAProxy(self)
        port = self.haproxy.ports["ocpp"] = free_port()
        servers = [
            f"    server {gw.node_name} 127.0.0.1:{gw.port} send-proxy-v2 check port "
            f"{gw.service.api.port.getHost().port} inter 200ms fall 2 rise 2"
            for gw in (self.a, self.b)
        ]
        yield self.haproxy.run(
            [
                "global",
                "    maxconn 200",
                "defaults",
                "    mode tcp",
                "    timeout connect 5s",
                "    timeout client 60s",
                "    timeout server 60s",
                "    timeout check 2s",
                "frontend ocpp",
                f"    bind 127.0.0.1:{port}",
                "    default_backend gateways",
                "backend gateways",
                "    balance roundrobin",
                "    option httpchk GET /status",
                "    http-check expect status 200",
                *servers,
            ]
        )

    def connect_via_haproxy(self, cid: str) -> Any:
        """A WebSocket from 127.0.0.2 through HAProxy; fires with (Client, its local port)."""
        port = self.haproxy.ports["ocpp"]
        loop = self.a.loop

        async def open_() -> tuple[Client, int]:
            import websockets

            sock = await loop.loop.run_in_executor(None, _connect_from, port)
            websocket = await websockets.connect(
                f"ws://localhost:{port}/ocpp/{cid}", sock=sock, subprotocols=["ocpp1.6"], open_timeout=10
            )
            return Client(loop, websocket, None), sock.getsockname()[1]

        def track(result: tuple[Client, int]) -> tuple[Client, int]:
            self.a.clients.append(result[0])
            return result

        return loop.run(open_()).addCallback(track)

    def holder(self, cid: str) -> str | None:
        held = [gw.node_name for gw in (self.a, self.b) if gw.service.router.session(cid) is not None]
        return held[0] if len(held) == 1 else None

    @inlineCallbacks
    def status(self, gw: GatewayHarness) -> Any:
        response = yield treq.get(gw.api_url + "/status", pool=self.pool)
        yield response.content()
        return response.code

    @inlineCallbacks
    def test_round_robin_real_address_and_health_check(self) -> Any:
        yield self.start_balanced()
        # both nodes healthy (the checks need "rise" passes first): charge points land on both
        landed: dict[str, str] = {}
        deadline = reactor.seconds() + 20
        index = 0
        while set(landed.values()) != {"gwa", "gwb"}:
            self.assertLess(reactor.seconds(), deadline, f"not spread over both nodes: {landed}")
            cid = f"CP{index}"
            index += 1
            _client, local_port = yield self.connect_via_haproxy(cid)
            yield poll_until(lambda cid=cid: self.holder(cid) is not None, timeout=10)
            node = landed[cid] = self.holder(cid)
            gw = self.a if node == "gwa" else self.b
            # the presence names the node holding it and the charge point's own address (PROXY v2)
            presence = yield gw.wait_messages(f"ocpp/cp/{cid}/Presence", 1)
            self.assertEqual(
                (presence[0]["status"], presence[0]["member"], presence[0]["peer"]),
                ("connected", node, f"{CLIENT_HOST}:{local_port}"),
            )
        # node B loses its broker: its /status says 503, and HAProxy sends new connections to A only
        code = yield self.status(self.b)
        self.assertEqual(code, 200)
        self.nats.stop_node(1)
        yield poll_until(lambda: not self.b.service.link.connected, timeout=15)
        code = yield self.status(self.b)
        self.assertEqual(code, 503)
        deadline = reactor.seconds() + 15
        in_a_row = 0
        while in_a_row < 4:  # round robin over two healthy servers never gives 4 in a row to one
            self.assertLess(reactor.seconds(), deadline, "HAProxy still sends connections to gwb")
            cid = f"LATE{index}"
            index += 1
            yield self.connect_via_haproxy(cid)
            yield poll_until(lambda cid=cid: self.holder(cid) is not None, timeout=10)
            in_a_row = in_a_row + 1 if self.holder(cid) == "gwa" else 0
