"""Two gateway nodes on a real 3-node NATS cluster (MQTT enabled), each on its own NATS node: one
gateway across them. Cross-node takeover, command routing after it, racing connects, the cluster-wide
client list and kick, ``node_status``, ``/status``, and the dead-node presence sweep after ``kill -9``
(the dead node a ``twistd`` process)."""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests.integration.harness import Client, GatewayHarness
from tests.integration.nats import NatsCluster, jetstream_consumer_filters
from tests.integration.twistd_process import spawn_twistd, write_ini
from tests.support import MqttRecorder, free_port, poll_until, port_accepts

KEYS = "ci:s3cret\n"
ADMIN = {"Authorization": "Basic " + base64.b64encode(b"ci:s3cret").decode()}
REPLACED = (1000, "replaced by a newer connection")


class ClusterTestCase(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        self.nats = NatsCluster(self)
        yield self.nats.start()
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)

    @inlineCallbacks
    def node(self, name: str, index: int, extra: str = "") -> Any:
        """Gateway node ``name`` on NATS node ``index``, its API on a free port (key ``ci``), with
        ``[dnstream] qos = 0`` as README "Brokers" recommends on NATS: there every QoS 1 subscription
        is a JetStream consumer whose creation holds NATS's read loop for the gateway's connection
        for seconds (its log: "Readloop processing time"), which under a loaded CI machine pushed a
        BootNotification past the harness's 10 s wait."""
        data_dir = Path(tempfile.mkdtemp(prefix=f"ocppgw-{name}-"))
        (data_dir / "keys.txt").write_text(KEYS, encoding="utf-8")
        config = (
            f"[gateway]\ndata_dir = {data_dir}\n[api]\nenable = true\nbind = 127.0.0.1:0\n"
            f"bootstrap_file = {data_dir / 'keys.txt'}\n[dnstream]\nqos = 0\n" + extra
        )
        gw = GatewayHarness(self, config, mqtt_port=self.nats.mqtt_ports[index], node_name=name)
        yield gw.start()
        return gw

    @inlineCallbacks
    def members_see(self, *nodes: GatewayHarness) -> Any:
        """Every node's cluster knows every other one online."""
        names = sorted(n.node_name for n in nodes)

        def everyone() -> bool:
            return all(sorted(n.service.router.cluster.online()) == names for n in nodes)

        yield poll_until(everyone, timeout=15)

    @inlineCallbacks
    def answered(self, gw: GatewayHarness, member: str, timeout: float = 15) -> Any:
        """Until ``member`` answers ``gw``'s status request."""
        deadline = reactor.seconds() + timeout
        while reactor.seconds() < deadline:
            gathered = yield gw.service.router.cluster.ask("status")
            if member in gathered.replies:
                return
        self.fail(f"{member} never answered {gw.node_name}")

    @inlineCallbacks
    def api(self, gw: GatewayHarness, method: str, path: str) -> Any:
        response = yield treq.request(method, gw.api_url + path, headers=ADMIN, pool=self.pool)
        content = yield response.content()
        return response.code, (json.loads(content) if content and content[:1] in b"[{" else content)


class CrossNodeTests(ClusterTestCase):
    @inlineCallbacks
    def test_lingering_subscription_dropped_on_move(self) -> Any:
        """CP2 leaves node A (its subscription lingers there for a quick return) and connects to B
        instead: B's claim ends A's lingering subscription (how fast: bench/cluster.py's takeovers)."""
        a = yield self.node("gwa", 0)
        b = yield self.node("gwb", 1)
        yield self.members_see(a, b)
        first = yield a.connect("CP2")
        yield a.boot(first, "CP2")
        yield first.close()
        subscriptions = a.service.router.subscriptions
        yield poll_until(lambda: subscriptions.lingering() == 1, timeout=5, description="lingering on A")
        self.assertEqual(subscriptions.topic("CP2"), "ocpp/cs/CP2")
        yield b.connect("CP2")
        yield poll_until(lambda: b.service.router.session("CP2") is not None, timeout=5)
        yield poll_until(lambda: subscriptions.topic("CP2") is None, timeout=5, description="A unsubscribed")
        self.assertEqual(subscriptions.lingering(), 0)

    @inlineCallbacks
    def test_takeover_then_command_routing(self) -> Any:
        """CP1 moves from node A to node B: A closes it with 1000 "replaced by a newer connection" and drops
        its subscription; a command published right after reaches CP1 on B. How fast the takeover is
        is bench/cluster.py's to measure: a 1 s bound here failed under a loaded CI run (1.03 s)."""
        a = yield self.node("gwa", 0)
        b = yield self.node("gwb", 1)
        yield self.members_see(a, b)
        old = yield a.connect("CP1")
        yield a.boot(old, "CP1")
        yield poll_until(lambda: a.service.router.session("CP1") is not None)
        new = yield b.connect("CP1")
        closed = yield old.wait_closed(timeout=5)
        self.assertEqual(closed, REPLACED)
        self.assertIsNone(a.service.router.session("CP1"))
        self.assertIsNone(a.service.router.subscriptions.topic("CP1"))
        # a command, published once, answered by the charge point on B
        a.publish(
            "CP1",
            {"MessageTypeId": 2, "UniqueId": "rs-1", "Action": "RemoteStartTransaction",
             "Payload": {"idTag": "TAG1"}},
        )  # fmt: skip
        replies = yield a.wait_messages("ocpp/cp/CP1/Reply", 1, timeout=10)
        self.assertEqual((replies[0]["UniqueId"], replies[0]["Payload"]), ("rs-1", {"status": "Accepted"}))
        self.assertIsNotNone(b.service.router.session("CP1"))
        # the presence stays 'connected', on B
        presence = [m for m in b.messages("ocpp/cp/CP1/Presence")]
        self.assertEqual((presence[-1]["status"], presence[-1]["member"]), ("connected", "gwb"))
        self.assertNotIn("disconnected", [m["status"] for m in a.messages("ocpp/cp/CP1/Presence")])
        self.assertIsNone(new.websocket.close_code)

    @inlineCallbacks
    def test_racing_connects_end_with_one(self) -> Any:
        """CP1 connects to A and B at once, five times over: each time exactly one stays connected."""
        a = yield self.node("gwa", 0)
        b = yield self.node("gwb", 1)
        yield self.members_see(a, b)
        for round_ in range(5):
            cid = f"RACE{round_}"
            racing = [gw.connect(cid, ocpp_client=False) for gw in (a, b)]
            results = yield DeferredList(racing)
            clients: list[Client] = [client for ok, client in results if ok]
            self.assertEqual(len(clients), 2)

            def one_left(cid: str = cid, clients: list[Client] = clients) -> bool:
                held = [gw for gw in (a, b) if gw.service.router.session(cid) is not None]
                closed = [c for c in clients if c.websocket.close_code is not None]
                return len(held) == 1 and len(closed) == 1

            yield poll_until(one_left, timeout=5)
            closed = [c for c in clients if c.websocket.close_code is not None]
            self.assertEqual((closed[0].websocket.close_code, closed[0].websocket.close_reason), REPLACED)

    @inlineCallbacks
    def test_cluster_clients_kick_and_status(self) -> Any:
        """A's API lists the charge points of both nodes (field and filter ``node``), finds and kicks
        one connected to B, and reports both nodes in ``node_status``; ``/status`` needs no login."""
        a = yield self.node("gwa", 0)
        b = yield self.node("gwb", 1)
        yield self.members_see(a, b)
        yield a.connect("CPA", ocpp_client=False)
        on_b = yield b.connect("CPB", ocpp_client=False)
        yield poll_until(lambda: b.service.router.session("CPB") and a.service.router.session("CPA"))
        # until NATS has B's request subscription and A's reply subscription in place, a request
        # times out (1 s) without B's answer
        yield self.answered(a, "gwb")
        # what the API answers is tested here, not how fast (bench/cluster.py): on a loaded CI
        # machine a request and its reply, two QoS 1 publishes that NATS stores in JetStream
        # first, once took over the 1 s default and B's clients were left out
        a.service.router.cluster.requests.timeout = 10.0
        code, page = yield self.api(a, "GET", "/api/v5/gateways/ocpp/clients")
        self.assertEqual(code, 200)
        self.assertEqual(
            sorted((c["clientid"], c["node"]) for c in page["data"]), [("CPA", "gwa"), ("CPB", "gwb")]
        )
        self.assertEqual(page["meta"]["count"], 2)
        code, page = yield self.api(a, "GET", "/api/v5/gateways/ocpp/clients?node=gwb")
        self.assertEqual([c["clientid"] for c in page["data"]], ["CPB"])
        code, _ = yield self.api(a, "GET", "/api/v5/gateways/ocpp/clients?node=nowhere")
        self.assertEqual(code, 400)
        code, client = yield self.api(a, "GET", "/api/v5/gateways/ocpp/clients/CPB")
        self.assertEqual((code, client["node"], client["connected"]), (200, "gwb", True))
        code, subscriptions = yield self.api(a, "GET", "/api/v5/gateways/ocpp/clients/CPB/subscriptions")
        self.assertEqual((code, subscriptions[0]["topic"]), (200, "ocpp/cs/CPB"))
        code, gateways = yield self.api(a, "GET", "/api/v5/gateways")
        self.assertEqual(
            [(n["node"], n["status"], n["current_connections"]) for n in gateways[0]["node_status"]],
            [("gwa", "running", 1), ("gwb", "running", 1)],
        )
        self.assertEqual(gateways[0]["current_connections"], 2)
        code, _ = yield self.api(a, "DELETE", "/api/v5/gateways/ocpp/clients/CPB")
        self.assertEqual(code, 204)
        closed = yield on_b.wait_closed(timeout=5)
        self.assertEqual(closed, (1000, "kicked"))
        code, _ = yield self.api(a, "DELETE", "/api/v5/gateways/ocpp/clients/CPB")
        self.assertEqual(code, 404)
        response = yield treq.get(a.api_url + "/status", pool=self.pool)
        body = yield response.text()
        self.assertEqual((response.code, body), (200, "Node gwa is started\nocppgw is running\n"))

    @inlineCallbacks
    def test_control_subscriptions_are_not_jetstream_consumers(self) -> Any:
        """On NATS a QoS 1 subscription is a JetStream consumer, which handed takeover claims over up
        to half a second late, some not within 10 s (bench/README.md, issue 12): the members'
        control subscriptions are QoS 0 there, so NATS holds no consumer of the control topics, and a
        takeover still closes the old connection (within the 5 s a JetStream consumer could exceed;
        how fast: bench/cluster.py's takeovers)."""
        a = yield self.node("gwa", 0)
        b = yield self.node("gwb", 1)
        yield self.members_see(a, b)
        yield self.answered(a, "gwb")
        old = yield a.connect("CP1")
        yield poll_until(lambda: a.service.router.session("CP1") is not None)
        filters = yield deferToThread(jetstream_consumer_filters, self.nats.client_ports[2])
        self.assertTrue(filters)  # the tests' own recorders subscribe at QoS 1
        self.assertEqual([f for f in filters if f.startswith("$MQTT.msgs.ocpp.gateway.")], [])
        yield b.connect("CP1")
        closed = yield old.wait_closed(timeout=5)
        self.assertEqual(closed, REPLACED)


class DeadNodeTests(ClusterTestCase):
    @inlineCallbacks
    def test_kill_9_sweep(self) -> Any:
        """Node B (twistd) is killed with SIGKILL holding CP1 and CP2: A marks both 'disconnected',
        reason 'node down', once each, within the broker's keepalive detection plus 2 s."""
        a = yield self.node("gwa", 0)
        ws_port, keepalive = free_port(), 2
        config = write_ini(
            self,
            f"[gateway]\nnode_name = gwb\n[mqtt]\nport = {self.nats.mqtt_ports[1]}\nkeepalive = {keepalive}\n"
            "reconnect_delay_min = 100ms\nreconnect_delay_max = 1s\n"
            f"[listeners.ws.default]\nbind = 127.0.0.1:{ws_port}\n",
        )
        child, transport = spawn_twistd(self, config)
        try:
            yield poll_until(lambda: port_accepts(ws_port), timeout=30)
            yield poll_until(lambda: "gwb" in a.service.router.cluster.online(), timeout=15)
        except Exception:
            self.fail(child.output())
        for cid in ("CP1", "CP2"):
            yield a.connect(cid, ocpp_client=False, url=f"ws://127.0.0.1:{ws_port}/ocpp/{cid}")

        def connected_on_b(cid: str) -> bool:
            messages = a.messages(f"ocpp/cp/{cid}/Presence")
            return any(m["status"] == "connected" and m["member"] == "gwb" for m in messages)

        yield poll_until(lambda: connected_on_b("CP1") and connected_on_b("CP2"), timeout=10)
        killed_at = reactor.seconds()
        transport.signalProcess("KILL")
        yield child.ended

        def node_down(cid: str) -> list[dict[str, Any]]:
            return [m for m in a.messages(f"ocpp/cp/{cid}/Presence") if m.get("reason") == "node down"]

        yield poll_until(lambda: node_down("CP1") and node_down("CP2"), timeout=1.5 * keepalive + 2)
        self.assertLessEqual(reactor.seconds() - killed_at, 1.5 * keepalive + 2)
        for cid in ("CP1", "CP2"):
            (message,) = node_down(cid)
            self.assertEqual(
                (message["status"], message["node"], message["member"]), ("disconnected", "gwb", "gwb")
            )
        # what a central system reads now, retained: disconnected; and nothing more comes
        yield poll_until(lambda: not a.service.router.sweeps._running, timeout=10)
        reader = MqttRecorder("127.0.0.1", self.nats.mqtt_ports[2], "ocpp/cp/+/Presence", client_id="reader")
        yield reader.start()
        self.addCleanup(reader.stop)
        yield poll_until(lambda: len(reader.messages()) >= 2, timeout=10)
        retained = [json.loads(m.payload) for m in reader.messages()]
        states = {body["clientid"]: body["reason"] for body in retained}
        self.assertEqual(states, {"CP1": "node down", "CP2": "node down"})
        self.assertEqual([len(node_down(cid)) for cid in ("CP1", "CP2")], [1, 1])
