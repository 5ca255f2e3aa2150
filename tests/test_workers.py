"""Tests for ocppgw.workers (the master's parts that need no process), ocppgw.worker and ocppgw.openfiles."""

from __future__ import annotations

import atexit
import json
import os
import resource
import socket
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest
from twisted.internet import fdesc
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessTerminated
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.api import clients, manage_listeners
from ocppgw.api.context import ApiContext
from ocppgw.api.http import ApiRequest
from ocppgw.config import config_from_string, load_config
from ocppgw.logtext import worker_record
from ocppgw.metrics import Metrics
from ocppgw.openfiles import RESERVED, check_connections, raise_soft_limit
from ocppgw.service import GatewayService
from ocppgw.worker import WorkerControl, own_config
from ocppgw.workers import master_client_id, worker_config
from ocppgw.workers.control import ControlChannel, RemoteError
from ocppgw.workers.exposition import merge
from ocppgw.workers.log_pipe import LogPipe
from ocppgw.workers.master import MasterService
from ocppgw.workers.process import BACKOFF_MAX, RESTART_DELAY, _Output, exit_text, restart_delay
from ocppgw.workers.sockets import reuseport_group
from tests.fakes import FakeMqttLink
from tests.support import ThreadedMemoryReactorClock, held_reuseport_port

INI = """[gateway]
node_name = box
workers = 3
[mqtt]
client_id = gw
[listeners.ws.a]
bind = 127.0.0.1:0
max_connections = 1000
max_conn_rate = 30
[listeners.ws.b]
bind = 127.0.0.1:0
max_connections = infinity
"""


class WorkerConfigTests(SynchronousTestCase):
    def test_worker_config(self) -> None:
        """Worker i is member <node>-w<i> with client id <client_id>-<i>, runs no API, and takes 1/N of
        each listener's connection and rate limits; the master's client id ends in -0."""
        config = config_from_string(INI)
        mine = worker_config(config, 2)
        self.assertEqual((mine.gateway.node_name, mine.gateway.member), ("box", "box-w2"))
        self.assertEqual(mine.mqtt.client_id, "gw-2")
        self.assertFalse(mine.api.enable)
        a, b = mine.listeners
        self.assertEqual((a.max_connections, a.max_conn_rate), (334, 10.0))
        self.assertEqual((b.max_connections, b.max_conn_rate), (None, 1000.0 / 3))
        self.assertEqual(master_client_id(config), "gw-0")
        self.assertEqual(config.gateway.member, "box")

    def test_own_config_keeps_inherited_listeners(self) -> None:
        """A listener gw.ini gained since the master bound its sockets is left out of the worker."""
        mine = own_config(config_from_string(INI), 1, {"ws.a": 4})
        self.assertEqual([x.label for x in mine.listeners], ["ws.a"])


class SocketTests(SynchronousTestCase):
    def test_group_on_one_port(self) -> None:
        """N sockets, all listening on the one port that port 0 picked."""
        listener = config_from_string(INI).listeners[0]
        group = reuseport_group(listener, 3, "gw.ini")
        assert isinstance(group, list)
        self.addCleanup(lambda: [s.close() for s in group])
        ports = {s.getsockname()[1] for s in group}
        self.assertEqual(len(group), 3)
        self.assertEqual(len(ports), 1)
        self.assertTrue(all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in group))
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass

    def test_port_in_use(self) -> None:
        """A port another process listens on, even with SO_REUSEPORT, is the one problem line."""
        port = held_reuseport_port(self)
        listener = config_from_string(f"[listeners.ws.x]\nbind = 127.0.0.1:{port}\n").listeners[0]
        self.assertEqual(
            reuseport_group(listener, 2, "gw.ini"),
            f"gw.ini: [listeners.ws.x] bind: cannot listen on 127.0.0.1:{port}: Address already in use",
        )


class ExpositionTests(SynchronousTestCase):
    def test_sum(self) -> None:
        """Counters, gauges and histogram buckets add up per label set; start time keeps the smallest."""
        one, two = Metrics(), Metrics()
        one.inc("connects", 3)
        two.inc("connects", 4)
        one.inc("disconnects", reason="shutdown")
        one.gauge("connected_charge_points", lambda: 2)
        two.gauge("connected_charge_points", lambda: 5)
        one.observe("downstream_round_trip_seconds", 0.2, action="Reset")
        two.observe("downstream_round_trip_seconds", 0.02, action="Reset")
        texts = [generate_latest(m.registry).decode() for m in (one, two)]
        starts = [
            float(line.split()[1])
            for text in texts
            for line in text.splitlines()
            if line.startswith("process_start_time_seconds ")
        ]
        merged = merge(texts).decode()
        lines = set(merged.splitlines())
        self.assertIn("ocppgw_connects_total 7.0", lines)
        self.assertIn('ocppgw_disconnects_total{reason="shutdown"} 1.0', lines)
        self.assertIn("ocppgw_connected_charge_points 7.0", lines)
        self.assertIn('ocppgw_downstream_round_trip_seconds_bucket{action="Reset",le="0.025"} 1.0', lines)
        self.assertIn('ocppgw_downstream_round_trip_seconds_bucket{action="Reset",le="0.25"} 2.0', lines)
        self.assertIn('ocppgw_downstream_round_trip_seconds_count{action="Reset"} 2.0', lines)
        self.assertIn("# TYPE ocppgw_connects_total counter", lines)
        merged_starts = [
            float(line.split()[1]) for line in lines if line.startswith("process_start_time_seconds ")
        ]
        self.assertEqual(merged_starts, [min(starts)] if starts else [])  # Linux /proc only

    def test_worst_case_gauges_keep_the_largest(self) -> None:
        """A ``*_max_seconds`` gauge is the worst worker's, not a sum (a node's worst event-loop lag)."""
        texts = []
        for worst in (0.03, 0.25, 0.04):
            metrics = Metrics()
            metrics.gauge("event_loop_lag_max_seconds", lambda worst=worst: worst)
            metrics.observe("event_loop_lag_seconds", worst)
            texts.append(generate_latest(metrics.registry).decode())
        lines = set(merge(texts).decode().splitlines())
        self.assertIn("ocppgw_event_loop_lag_max_seconds 0.25", lines)
        self.assertIn("ocppgw_event_loop_lag_seconds_count 3.0", lines)


class ControlChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.lost: list[bool] = []
        self.master = ControlChannel({"ready": lambda: None})
        self.worker = ControlChannel(
            {"add": lambda a, b: a + b, "boom": lambda: 1 / 0, "later": lambda: succeed("done")},
            on_lost=lambda: self.lost.append(True),
        )
        for channel in (self.master, self.worker):
            channel.makeConnection(StringTransport())

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for a, b in ((self.master, self.worker), (self.worker, self.master)):
                data = a.transport.value()
                if data:
                    a.transport.clear()
                    b.dataReceived(data)
                    moved = True

    def test_call_and_reply(self) -> None:
        results: list[Any] = []
        self.master.call("add", a=2, b=3).addCallback(results.append)
        self.master.call("later").addCallback(results.append)
        self.pump()
        self.assertEqual(results, [5, "done"])

    def test_errors(self) -> None:
        """A handler that raises, or an unknown operation, fails the caller's Deferred with RemoteError."""
        errors: list[Failure] = []
        self.master.call("boom").addErrback(errors.append)
        self.master.call("nosuch").addErrback(errors.append)
        self.pump()
        self.assertEqual([f.type for f in errors], [RemoteError, RemoteError])
        self.assertIn("division by zero", errors[0].getErrorMessage())
        self.assertIn("unknown operation 'nosuch'", errors[1].getErrorMessage())
        self.flushLoggedErrors(ZeroDivisionError, RemoteError)

    def test_lost(self) -> None:
        """Calls still waiting fail when the channel closes; the worker side hears about it; a call on a
        closed channel fails at once."""
        errors: list[Failure] = []
        self.worker.call("ready").addErrback(errors.append)
        self.worker.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([f.type for f in errors], [ConnectionDone])
        self.assertEqual(self.lost, [True])
        self.worker.call("ready").addErrback(errors.append)
        self.assertEqual(len(errors), 2)

    def test_not_json(self) -> None:
        self.worker.stringReceived(b"{nope")
        self.assertTrue(self.worker.transport.disconnecting)


class ProcessTests(SynchronousTestCase):
    def test_restart_delay(self) -> None:
        """A worker that had started comes back within 1 s; one that keeps dying while starting waits
        twice as long each time, up to BACKOFF_MAX."""
        self.assertLess(restart_delay(0), 1.0)
        self.assertEqual(restart_delay(0), RESTART_DELAY)
        self.assertEqual([restart_delay(n) for n in (1, 2, 3)], [1.0, 2.0, 4.0])
        self.assertEqual(restart_delay(50), BACKOFF_MAX)

    def test_exit_text(self) -> None:
        self.assertEqual(exit_text(Failure(ProcessDone(0))), "exit code 0")
        self.assertEqual(exit_text(Failure(ProcessTerminated(exitCode=2))), "exit code 2")
        self.assertEqual(exit_text(Failure(ProcessTerminated(signal=9))), "signal 9 (SIGKILL)")

    def test_output_relayed(self) -> None:
        """A worker's JSON log record is re-emitted with its member as ``worker``; other lines as text."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        ended: list[Failure] = []
        output = _Output("box-w1", ended.append)
        record = worker_record(
            {"log_format": "hello {cid}", "cid": "CP1", "log_level": LogLevel.warn, "log_namespace": "x.y"}
        )
        data = record.encode() + b"plain "
        output.childDataReceived(2, data[:10])
        output.childDataReceived(2, data[10:])
        output.childDataReceived(2, b"text\n")
        output.processEnded(Failure(ProcessDone(0)))
        relayed = [e for e in events if e.get("worker") == "box-w1"]
        self.assertEqual(relayed[0]["cid"], "CP1")
        self.assertEqual(relayed[0]["log_system"], "box-w1 x.y#warn")
        self.assertEqual(relayed[0]["log_level"], LogLevel.warn)
        self.assertEqual(formatEvent(relayed[0]), "hello CP1")
        self.assertEqual(relayed[1]["line"], "plain text")
        self.assertEqual(len(ended), 1)


class FakeWorker:
    """What MasterService asks of a WorkerProcess, answering calls from ``answers``."""

    def __init__(self, member: str, answers: dict[str, Any], ready: bool = True) -> None:
        self.member = member
        self.answers = answers
        self.ready = ready
        self.status: dict[str, Any] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, op: str, timeout: float, **args: Any) -> Deferred[Any]:
        self.calls.append((op, args))
        answer = self.answers.get(op)
        return fail(RuntimeError("no answer")) if answer is None else succeed(answer)


class MasterApiTests(SynchronousTestCase):
    """The master as the API's gateway (ManagedGateway), over fake workers."""

    def setUp(self) -> None:
        root = Path(self.mktemp()).absolute()
        root.mkdir()
        (root / "gw.ini").write_text("[gateway]\nworkers = 2\n[listeners.ws.default]\nbind = 127.0.0.1:0\n")
        self.config = load_config(root / "gw.ini")
        self.master = MasterService(self.config, ThreadedMemoryReactorClock())
        self.context = ApiContext(
            self.master, None, self.master.directory, self.master.reactor, self.config.gateway.data_dir
        )

    def test_metrics_summed(self) -> None:
        one, two = Metrics(), Metrics()
        one.inc("connects", 2)
        two.inc("connects", 5)
        self.master.workers = [
            FakeWorker("w1", {"metrics": generate_latest(one.registry).decode()}),
            FakeWorker("w2", {"metrics": generate_latest(two.registry).decode()}),
            FakeWorker("w3", {}, ready=False),
        ]
        texts: list[bytes] = []
        self.master.metrics_text().addCallback(texts.append)
        self.assertIn(b"ocppgw_connects_total 7.0\n", texts[0])

    def test_listener_status(self) -> None:
        """A listener runs while bound and listening in a worker; its connections are all workers'."""
        self.master.sockets = {"ws.default": []}
        workers = [FakeWorker("w1", {}), FakeWorker("w2", {})]
        workers[0].status = {"listeners": {"ws.default": {"running": True, "connections": 3}}}
        workers[1].status = {"listeners": {"ws.default": {"running": False, "connections": 4}}}
        self.master.workers = workers  # type: ignore[assignment]
        listener = self.master.listener("ws.default")
        assert listener is not None
        self.assertEqual((listener.port is not None, listener.connections), (True, 7))
        self.assertIsNone(self.master.listener("ws.other"))

    def test_set_enabled_fans_out(self) -> None:
        workers = [FakeWorker("w1", {"set_enabled": ["p1"]}), FakeWorker("w2", {"set_enabled": ["p1", "p2"]})]
        self.master.workers = workers  # type: ignore[assignment]
        results: list[list[str]] = []
        self.master.set_enabled(False).addCallback(results.append)
        self.assertEqual(results, [["p1", "p2"]])
        self.assertEqual(workers[0].calls, [("set_enabled", {"enabled": False})])
        self.assertFalse(self.master.enabled)

    def test_reconfigure_and_authenticator(self) -> None:
        workers = [FakeWorker("w1", {"reload_config": True})]
        self.master.workers = workers  # type: ignore[assignment]
        self.master.reconfigure(self.config)
        self.master.swap_authenticator(self.config)
        self.assertEqual(
            workers[0].calls, [("reload_config", {}), ("reload_config", {"authentication": True})]
        )

    def test_listener_changes_refused(self) -> None:
        """POST, PUT and DELETE of listeners answer 400 NOT_SUPPORTED naming workers; nothing is saved."""
        routes = manage_listeners.routes(self.context)
        base = "/gateways/ocpp/listeners"
        for method, path in (("POST", base), ("PUT", base + "/{id}"), ("DELETE", base + "/{id}")):
            (route,) = [r for r in routes if (r.method, r.pattern) == (method, path)]
            request = ApiRequest(method, path, {"id": "ocpp:ws:default"}, {}, {"type": "ws", "name": "x"})
            failures: list[Failure] = []
            result = route.handler(request)
            if isinstance(result, Deferred):
                result.addErrback(failures.append)
            self.assertEqual(failures[0].value.code, "NOT_SUPPORTED")
            self.assertIn("workers > 1", failures[0].value.message)
        self.assertFalse((self.config.gateway.data_dir / "overrides.json").exists())

    def test_clients_through_the_directory(self) -> None:
        """The master holds no charge points: its client list is what the directory gathers from the
        members (none online here: an empty page, not an error), and it counts no connections itself."""
        (route, *_rest) = clients.routes(self.context)
        response = self.successResultOf(route.handler(ApiRequest("GET", route.pattern, {}, {}, None)))
        self.assertEqual((response.status, response.body["data"]), (200, []))
        self.assertEqual(self.master.directory.local_status()["current_connections"], 0)


class WorkerControlTests(SynchronousTestCase):
    def test_status_and_reload(self) -> None:
        """status names the member, its link and listeners; reload_config re-reads gw.ini and the
        overrides for the next charge points, keeping the worker's identity and listeners."""
        root = Path(self.mktemp()).absolute()
        root.mkdir()
        ini = root / "gw.ini"
        ini.write_text(
            "[gateway]\nnode_name = box\nworkers = 2\n[listeners.ws.default]\nbind = 127.0.0.1:0\n"
        )
        config = worker_config(load_config(ini), 1)
        reactor = ThreadedMemoryReactorClock()
        service = GatewayService(config, reactor, link=FakeMqttLink(), inherited={"ws.default": 7})
        control = WorkerControl(service, 1, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(reactor.adoptedPorts[0][0], 7)
        status = control.status()
        self.assertEqual(status["member"], "box-w1")
        self.assertEqual(status["listeners"], {"ws.default": {"running": True, "connections": 0}})
        ini.write_text(ini.read_text().replace("workers = 2", "workers = 2\nmountpoint = next/"))
        control.reload_config()
        self.assertEqual(service.config.gateway.mountpoint, "next/")
        self.assertEqual(
            (service.config.gateway.member, service.config.mqtt.client_id[-2:]), ("box-w1", "-1")
        )
        self.assertEqual(json.loads(json.dumps(control.status()))["member"], "box-w1")


class OpenFilesTests(SynchronousTestCase):
    def test_raise(self) -> None:
        """The soft limit goes up to the hard one; when the system refuses, the soft one stays."""
        calls: list[tuple[int, int]] = []
        self.assertEqual(
            raise_soft_limit(lambda _r: (1024, 4096), lambda _r, limits: calls.append(limits)), (4096, 4096)
        )
        self.assertEqual(calls, [(4096, 4096)])

        def refuse(_r: int, _limits: tuple[int, int]) -> None:
            raise ValueError("not allowed")

        self.assertEqual(raise_soft_limit(lambda _r: (1024, 4096), refuse), (1024, 4096))

    def test_check(self) -> None:
        """One warning with both limits when a process's share of max_connections does not fit."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        config = config_from_string("[listeners.ws.a]\nbind = 1\nmax_connections = 10000\n")
        self.assertTrue(check_connections(config, 10000 + RESERVED, 20000))
        self.assertTrue(check_connections(config, 5000 + RESERVED, 20000, workers=2))
        self.assertEqual(events, [])
        self.assertFalse(check_connections(config, 4096, 20000))
        (event,) = events
        self.assertEqual((event["wanted"], event["soft"], event["hard"]), (10000, 4096, 20000))
        unlimited = config_from_string("[listeners.ws.a]\nbind = 1\nmax_connections = infinity\n")
        self.assertFalse(check_connections(unlimited, 4096, resource.RLIM_INFINITY))
        self.assertEqual((events[1]["wanted"], events[1]["hard"]), ("unlimited", "unlimited"))


class LogPipeTests(SynchronousTestCase):
    """``LogPipe``: a worker's log lines on a pipe, never blocking its reactor, bounded."""

    def setUp(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.addCleanup(lambda: os.close(self.read_end))
        self.addCleanup(os.close, self.write_end)
        self.reactor = MemoryReactor()
        self.pipe = LogPipe(self.reactor, self.write_end, limit=1000)
        self.addCleanup(atexit.unregister, self.pipe.drain_blocking)

    def read(self) -> bytes:
        fdesc.setNonBlocking(self.read_end)
        chunks = []
        while True:
            try:
                chunk = os.read(self.read_end, 1 << 16)
            except BlockingIOError:
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def test_lines_wait_for_the_reactor(self) -> None:
        """Lines go out when the reactor finds the pipe writable, all in one write."""
        self.pipe.write("one\n")
        self.pipe.flush()
        self.pipe.write(b"two\n")
        self.assertEqual(self.read(), b"")
        self.assertEqual(self.reactor.getWriters(), [self.pipe])
        self.pipe.doWrite()
        self.assertEqual(self.read(), b"one\ntwo\n")
        self.assertEqual(self.reactor.getWriters(), [])

    def test_full_pipe_never_blocks_and_is_bounded(self) -> None:
        """With nobody reading, writes return at once; past the limit lines are dropped and counted,
        and the count goes out before the next line once there is room."""
        fill = b"x" * 4096
        while True:  # fill the pipe itself
            try:
                os.write(self.write_end, fill)
            except BlockingIOError:
                break
        for n in range(30):
            self.pipe.write(f"line {n:02d} " + "y" * 80 + "\n")
        self.assertEqual(self.pipe.dropped, 19)  # 89 bytes a line: 11 fit in 1,000
        self.pipe.doWrite()  # nothing fits: stays registered
        self.assertEqual(self.reactor.getWriters(), [self.pipe])
        self.read()
        self.pipe.write("after\n")
        self.pipe.doWrite()
        out = self.read().decode()
        self.assertTrue(out.startswith("line 00 "), out[:20])
        self.assertIn("line 10 ", out)
        self.assertNotIn("line 11 ", out)
        self.assertTrue(out.endswith("(ocppgw: 19 log lines dropped: the master did not read them)\nafter\n"))

    def test_drain_at_exit(self) -> None:
        """At exit what waits is written, blocking."""
        self.pipe.write("last words\n")
        self.pipe.drain_blocking()
        self.assertEqual(self.read(), b"last words\n")

    def test_master_gone(self) -> None:
        """The reading end closed: the pipe stops taking lines, without an error."""
        os.close(self.read_end)
        self.read_end = os.open(os.devnull, os.O_RDONLY)  # closed at cleanup instead
        self.pipe.write("lost\n")
        self.pipe.doWrite()
        self.assertEqual(self.reactor.getWriters(), [])
        self.pipe.write("ignored\n")
        self.assertEqual(self.reactor.getWriters(), [])
