"""``[gateway] workers = 2`` under real twistd: both workers serve the one port, a killed worker comes
back, SIGTERM drains every worker, SIGHUP reaches them, /metrics sums them, a charge point that
reconnects onto the other worker takes its connection over."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import ssl
import tempfile
from pathlib import Path
from typing import Any

import treq
import websockets
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests.devpki import client_context, make_dev_certs
from tests.integration.harness import AsyncioThread
from tests.integration.test_reload import file_der, server_der
from tests.integration.twistd_process import spawn_twistd, write_ini
from tests.support import (
    MosquittoBroker,
    MqttRecorder,
    free_port,
    held_reuseport_port,
    poll_until,
    port_accepts,
)

_STARTED = re.compile(r"worker (\S+) started \(pid (\d+)\)")
_BASIC = {"Authorization": "Basic " + base64.b64encode(b"ci:s3cret").decode()}


def boot(unique_id: str) -> str:
    payload = {"chargePointVendor": "ocppgw", "chargePointModel": "W2"}
    return json.dumps([2, unique_id, "BootNotification", payload])


class WorkersCase(TestCase):
    """twistd with ``workers = 2``, a private Mosquitto, an API key ``ci`` and an MQTT recorder."""

    timeout = 120

    @inlineCallbacks
    def start(self, pki: Any = None) -> Any:
        """Start twistd; with ``pki`` (``make_dev_certs``) the listener is wss with its certificate."""
        broker = MosquittoBroker(self)
        yield broker.start()
        self.ws_port = free_port()
        self.api_port = free_port()
        self.prefix = f"wk-{os.getpid()}-{self.ws_port}/"
        self.node = f"wk{self.ws_port}"
        self.members = (f"{self.node}-w1", f"{self.node}-w2")
        data = Path(tempfile.mkdtemp(prefix="ocppgw-workers-"))
        self.addCleanup(shutil.rmtree, data, True)
        keys = data / "keys.txt"
        keys.write_text("ci:s3cret\n", encoding="utf-8")
        listener = f"[listeners.ws.default]\nbind = 127.0.0.1:{self.ws_port}\n"
        if pki is not None:
            listener = f"[listeners.wss.tls]\nbind = 127.0.0.1:{self.ws_port}\n"
            listener += "certfile = server.pem\nkeyfile = server.key\n"
        self.config = write_ini(
            self,
            f"[gateway]\nmountpoint = {self.prefix}\nnode_name = {self.node}\nworkers = 2\n"
            f"shutdown_timeout = 5s\ndata_dir = {data}\n\n"
            f"[mqtt]\nport = {broker.port}\nreconnect_delay_min = 100ms\nreconnect_delay_max = 1s\n\n"
            f"{listener}\n[api]\nbind = 127.0.0.1:{self.api_port}\nbootstrap_file = {keys}\n",
        )
        self.recorder = MqttRecorder("127.0.0.1", broker.port, self.prefix + "#")
        yield self.recorder.start()
        self.addCleanup(self.recorder.stop)
        if pki is not None:
            shutil.copy(pki.server_cert, self.config.parent / "server.pem")
            shutil.copy(pki.server_key, self.config.parent / "server.key")
        self.child, self.transport = spawn_twistd(self, self.config)
        self.addCleanup(self.kill_workers)
        self.loop = AsyncioThread()
        self.addCleanup(self.loop.stop)
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        yield poll_until(self.listening, timeout=30, description="twistd listening")
        yield poll_until(
            lambda: all(self.member_states(m)[-1:] == ["online"] for m in self.members),
            timeout=30,
            description="both workers online",
        )

    def listening(self) -> bool:
        if self.child.done:
            raise AssertionError(f"twistd exited with {self.child.exit_code}\n{self.child.output()}")
        return port_accepts(self.ws_port)

    def output(self) -> str:
        return self.child.out.decode("utf-8", "replace") + self.child.err.decode("utf-8", "replace")

    def worker_pids(self) -> dict[str, list[int]]:
        """Each member's pids, in the order the master started them."""
        pids: dict[str, list[int]] = {}
        for member, pid in _STARTED.findall(self.output()):
            pids.setdefault(member, []).append(int(pid))
        return pids

    def kill_workers(self) -> None:
        """Cleanup: no worker outlives its test (the master is killed by spawn_twistd's cleanup)."""
        for pids in self.worker_pids().values():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def member_states(self, member: str) -> list[str]:
        topic = f"{self.prefix}gateway/{member}/Presence"
        return [json.loads(m.payload)["status"] for m in self.recorder.messages(topic) if m.payload]

    def presence(self, cid: str) -> list[dict[str, Any]]:
        topic = f"{self.prefix}cp/{cid}/Presence"
        return [json.loads(m.payload) for m in self.recorder.messages(topic) if m.payload]

    def holder(self, cid: str) -> str | None:
        """The member whose presence says ``cid`` is connected there now."""
        states = self.presence(cid)
        return states[-1]["member"] if states and states[-1]["status"] == "connected" else None

    def connect(self, cid: str, path: str = "/ocpp/", **kwargs: Any) -> Any:
        async def opened() -> Any:
            url = f"ws://127.0.0.1:{self.ws_port}{path}{cid}"
            return await websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=10, **kwargs)

        return self.loop.run(opened())

    @inlineCallbacks
    def connect_many(self, count: int, connections: dict[str, Any] | None = None) -> Any:
        """``count`` more charge points connected and booted; {cid: connection} once presence has them all."""
        connections = {} if connections is None else connections
        for n in range(len(connections), len(connections) + count):
            cid = f"W{self.ws_port}-{n}"
            connections[cid] = yield self.connect(cid)
            self.addCleanup(lambda c=connections[cid]: self.loop.run(c.close()))
            yield self.loop.run(connections[cid].send(boot(f"boot-{n}")))
        yield poll_until(
            lambda: all(self.holder(cid) for cid in connections), timeout=15, description="all connected"
        )
        return connections

    @inlineCallbacks
    def connect_on_both(self, count: int, limit: int = 64) -> Any:
        """At least ``count`` charge points, more (up to ``limit``) until each worker holds one: the
        kernel spreads connections by a hash, so a fixed handful can all land on one worker."""
        connections = yield self.connect_many(count)
        while {self.holder(cid) for cid in connections} != set(self.members) and len(connections) < limit:
            yield self.connect_many(4, connections)
        return connections

    def closed(self, connection: Any, timeout: float = 15) -> Any:
        async def wait() -> Any:
            await asyncio.wait_for(connection.wait_closed(), timeout)
            return connection.close_code, connection.close_reason

        return self.loop.run(wait())

    @inlineCallbacks
    def get(self, path: str) -> Any:
        response = yield treq.get(f"http://127.0.0.1:{self.api_port}{path}", headers=_BASIC, pool=self.pool)
        body = yield response.content()
        return response.code, body

    @inlineCallbacks
    def poll_get(self, path: str, check: Any, timeout: float = 10) -> Any:
        """GET ``path`` every 0.1 s until ``check(json body)`` holds; fails after ``timeout``."""
        deadline = reactor.seconds() + timeout
        while True:
            _code, body = yield self.get(path)
            if check(json.loads(body)):
                return
            if reactor.seconds() > deadline:
                self.fail(f"GET {path}: condition not met within {timeout}s: {body[:300]!r}")
            yield deferLater(reactor, 0.1, lambda: None)


class ServeTests(WorkersCase):
    @inlineCallbacks
    def test_both_workers_serve_and_metrics_sum(self) -> Any:
        """Charge points on one port land on both workers (presence names both members); /metrics and
        /api/v5/prometheus/stats sum both workers; /gateways counts every worker's connections."""
        yield self.start()
        connections = yield self.connect_on_both(16)
        total = len(connections)
        holders = {self.holder(cid) for cid in connections}
        self.assertEqual(holders, set(self.members))
        for cid in connections:
            self.assertEqual(self.presence(cid)[-1]["node"], self.node)
        for path in ("/metrics", "/api/v5/prometheus/stats"):
            code, body = yield self.get(path)
            self.assertEqual(code, 200, body)
            text = body.decode()
            self.assertIn(f"ocppgw_connected_charge_points {total}.0\n", text)
            self.assertIn("ocppgw_mqtt_connected 2.0\n", text)
            self.assertIn(f"ocppgw_connects_total {total}.0\n", text)
        yield self.poll_get("/api/v5/gateways", lambda body: body[0]["current_connections"] == total)
        code, body = yield self.get("/api/v5/gateways/ocpp/clients?limit=1000")
        self.assertEqual(code, 200, body)
        listed = json.loads(body)["data"]
        self.assertEqual(sorted(c["clientid"] for c in listed), sorted(connections))
        self.assertEqual({c["node"] for c in listed}, {self.node})
        code, body = yield self.get("/status")
        self.assertEqual(code, 200, body)
        self.assertNotIn("Traceback", self.output())

    @inlineCallbacks
    def test_listener_changes_need_one_worker(self) -> Any:
        """Listeners cannot change through the API with workers > 1: 400 NOT_SUPPORTED, nothing saved."""
        yield self.start()
        url = f"http://127.0.0.1:{self.api_port}/api/v5/gateways/ocpp/listeners/ocpp:ws:default"
        response = yield treq.delete(url, headers=_BASIC, pool=self.pool)
        body = json.loads((yield response.content()))
        self.assertEqual((response.code, body["code"]), (400, "NOT_SUPPORTED"))
        self.assertIn("workers > 1", body["message"])
        self.assertTrue(port_accepts(self.ws_port))


class RestartTests(WorkersCase):
    @inlineCallbacks
    def test_killed_worker_restarted(self) -> Any:
        """SIGKILL on a worker: the master logs how it ended and starts it again within 1 s; its charge
        points reconnect (to whichever worker the kernel picks) and the other worker's stay."""
        yield self.start()
        connections = yield self.connect_on_both(8)
        victim, survivor = self.members
        (old_pid,) = self.worker_pids()[victim]
        lost = [cid for cid in connections if self.holder(cid) == victim]
        kept = [cid for cid in connections if self.holder(cid) == survivor]
        self.assertTrue(lost and kept, {cid: self.holder(cid) for cid in connections})
        killed_at = reactor.seconds()
        os.kill(old_pid, signal.SIGKILL)
        yield poll_until(
            lambda: len(self.worker_pids()[victim]) == 2, timeout=10, interval=0.01, description="restarted"
        )
        self.assertLess(reactor.seconds() - killed_at, 1.5)
        self.assertIn(f"worker {victim} exited (signal 9 (SIGKILL)); restarting it in 0.5s", self.output())
        for cid in lost:
            code, _reason = yield self.closed(connections[cid])
            self.assertEqual(code, 1006)
        yield poll_until(lambda: self.member_states(victim)[-1:] == ["online"], timeout=15)
        for cid in lost:
            connection = yield self.connect(cid)
            self.addCleanup(lambda c=connection: self.loop.run(c.close()))
            yield self.loop.run(connection.send(boot("again")))
        yield poll_until(lambda: all(self.holder(cid) for cid in lost), timeout=15, description="reconnected")
        for cid in kept:
            self.assertIsNone(connections[cid].close_code)
        self.assertNotIn("Traceback", self.output())


class SignalTests(WorkersCase):
    @inlineCallbacks
    def test_sigterm_drains_every_worker(self) -> Any:
        """SIGTERM on the master: every charge point on either worker is closed with 1001 and published
        disconnected, both members go offline, and the master exits cleanly after its workers."""
        yield self.start()
        connections = yield self.connect_on_both(8)
        self.assertEqual({self.holder(cid) for cid in connections}, set(self.members))
        self.transport.signalProcess("TERM")
        for connection in connections.values():
            code, _reason = yield self.closed(connection)
            self.assertEqual(code, 1001)
        yield poll_until(lambda: self.child.done, timeout=30, description="twistd to exit")
        self.assertIn(
            (self.child.exit_code, self.child.signal),
            [(0, None), (None, signal.SIGTERM)],
            self.child.output(),
        )
        output = self.output()
        self.assertIn("Server Shut Down.", output)
        for member in self.members:
            self.assertIn(f"worker {member} exited (exit code 0)", output)
        yield poll_until(
            lambda: (
                all(self.presence(cid)[-1]["status"] == "disconnected" for cid in connections)
                and all(self.member_states(m)[-1:] == ["offline"] for m in self.members)
            ),
            timeout=10,
            description="presence disconnected, members offline",
        )
        self.assertNotIn("Traceback", output)


class SighupTests(WorkersCase):
    @inlineCallbacks
    def test_sighup_reaches_every_worker(self) -> Any:
        """SIGHUP on the master: every worker reloads its certificates, and new connections get the new
        one whichever worker takes them."""
        a = make_dev_certs(self.mktemp(), [], ca_name="workers CA A")
        b = make_dev_certs(self.mktemp(), [], ca_name="workers CA B")
        yield self.start(pki=a)
        self.assertEqual(server_der(self.ws_port, client_context(a.ca_cert)), file_der(a.server_cert))
        shutil.copy(b.server_cert, self.config.parent / "server.pem")
        shutil.copy(b.server_key, self.config.parent / "server.key")
        self.transport.signalProcess("HUP")
        yield poll_until(
            lambda: all(
                re.search(rf"\[{re.escape(m)} \S+#info\] certificates reloaded for wss.tls", self.output())
                for m in self.members
            ),
            timeout=15,
            description="both workers reloaded",
        )
        for _ in range(8):  # each new connection lands on either worker
            try:
                der = server_der(self.ws_port, client_context(b.ca_cert))
            except (ssl.SSLError, OSError) as e:
                self.fail(f"TLS with the new certificate failed: {e}")
            self.assertEqual(der, file_der(b.server_cert))
        self.assertFalse(self.child.done)


class TakeoverTests(WorkersCase):
    """Needs the cluster's takeover messages (``ocppgw.core.cluster``): workers are members."""

    @inlineCallbacks
    def test_reconnect_onto_the_other_worker(self) -> Any:
        """A charge point connects again, without closing, until the new connection lands on the other
        worker: the old connection there is closed with 1000 "replaced by a newer connection" within
        1 s, and presence ends connected on the new worker."""
        yield self.start()
        cid = f"T{self.ws_port}"
        first = yield self.connect(cid)
        self.addCleanup(lambda: self.loop.run(first.close()))
        yield poll_until(lambda: self.holder(cid), timeout=10, description="first connection")
        first_member = self.holder(cid)
        connection = first
        for attempt in range(40):
            newer = yield self.connect(cid)
            self.addCleanup(lambda c=newer: self.loop.run(c.close()))
            yield poll_until(
                lambda n=attempt + 2: len([p for p in self.presence(cid) if p["status"] == "connected"]) >= n,
                timeout=10,
                description="the newer connection's presence",
            )
            if self.holder(cid) != first_member:
                break
            code, reason = yield self.closed(connection, timeout=5)  # same worker: today's local takeover
            self.assertEqual(code, 1000)
            connection = newer
        else:
            self.fail("40 connections all landed on the same worker")
        replaced_at = reactor.seconds()
        code, reason = yield self.closed(connection, timeout=5)
        self.assertEqual((code, reason), (1000, "replaced by a newer connection"))
        self.assertLess(reactor.seconds() - replaced_at, 1.0)
        self.assertIsNone(newer.close_code)


class PortInUseTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_port_in_use(self) -> Any:
        """A listener port held by another process stops the master at start-up with the one line, even
        when that process also set SO_REUSEPORT; no worker is started."""
        port = held_reuseport_port(self)
        config = write_ini(
            self,
            f"[gateway]\nworkers = 2\n[mqtt]\nport = 1\n\n[listeners.ws.taken]\nbind = 127.0.0.1:{port}\n",
        )
        child, _transport = spawn_twistd(self, config)
        yield poll_until(lambda: child.done, timeout=20, description="twistd to exit")
        self.assertNotEqual(child.exit_code, 0, child.output())
        output = child.out.decode("utf-8", "replace") + child.err.decode("utf-8", "replace")
        line = (
            f"{config}: [listeners.ws.taken] bind: cannot listen on 127.0.0.1:{port}: Address already in use"
        )
        self.assertEqual(output.count(line), 1, child.output())
        self.assertNotIn("Traceback", output)
        self.assertNotIn("started (pid", output)
