"""``twistd -n ocppgw --config gw.ini`` as a real process: start, one charge point, SIGTERM, exit."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from typing import Any

import websockets
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.integration.harness import AsyncioThread
from tests.integration.twistd_process import TwistdProcess, spawn_twistd, until_listening, write_ini
from tests.support import MosquittoBroker, MqttRecorder, free_port, poll_until

CID = "E2E1"
BOOT_FRAME = [2, "e2e-boot-1", "BootNotification", {"chargePointVendor": "ocppgw", "chargePointModel": "E2E"}]


class TwistdTests(TestCase):
    """The gateway run exactly as README tells an operator to run it."""

    timeout = 120

    @inlineCallbacks
    def broker_port(self) -> Any:
        """A private Mosquitto (scripts/test installs it where it is missing)."""
        broker = MosquittoBroker(self)
        yield broker.start()
        return broker.port

    @inlineCallbacks
    def test_boot_then_sigterm(self) -> Any:
        """A charge point's BootNotification reaches MQTT; on SIGTERM it is closed with 1001, its presence
        turns 'disconnected', the node goes offline and twistd shuts down cleanly."""
        mqtt_port = yield self.broker_port()
        ws_port = free_port()
        prefix = f"e2e-{os.getpid()}-{ws_port}/"  # own topics, in case the broker is shared
        node = f"e2e{ws_port}"
        config = write_ini(
            self,
            f"[gateway]\nmountpoint = {prefix}\nnode_name = {node}\n\n"
            f"[mqtt]\nport = {mqtt_port}\nreconnect_delay_min = 100ms\nreconnect_delay_max = 1s\n\n"
            f"[listeners.ws.default]\nbind = 127.0.0.1:{ws_port}\n",
        )
        recorder = MqttRecorder("127.0.0.1", mqtt_port, prefix + "#")
        yield recorder.start()
        self.addCleanup(recorder.stop)
        presence_topic = f"{prefix}cp/{CID}/Presence"
        node_topic = f"{prefix}gateway/{node}/Presence"

        child, transport = spawn_twistd(self, config)

        yield until_listening(child, ws_port)

        def statuses(topic: str) -> list[str]:
            return [json.loads(m.payload)["status"] for m in recorder.messages(topic) if m.payload]

        yield poll_until(lambda: "online" in statuses(node_topic), timeout=15, description="node online")

        loop = AsyncioThread()
        self.addCleanup(loop.stop)

        async def connect() -> Any:
            url = f"ws://127.0.0.1:{ws_port}/ocpp/{CID}"
            return await websockets.connect(url, subprotocols=["ocpp1.6"], open_timeout=10)

        connection = yield loop.run(connect())
        self.assertEqual(connection.subprotocol, "ocpp1.6")
        yield loop.run(connection.send(json.dumps(BOOT_FRAME)))

        call_topic = f"{prefix}cp/{CID}"
        yield poll_until(lambda: recorder.messages(call_topic), timeout=10, description="boot on MQTT")
        (boot,) = [json.loads(m.payload) for m in recorder.messages(call_topic)]
        self.assertEqual(
            boot,
            {
                "MessageTypeId": 2,
                "UniqueId": "e2e-boot-1",
                "Action": "BootNotification",
                "Payload": BOOT_FRAME[3],
            },
        )
        self.assertIn("connected", statuses(presence_topic))
        # twistd's classic line, written by ocppgw.logtext's observer in twistd's place
        connect_line = (
            r"(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[ocppgw\.core\.router\.Router#info\] "
            rf"charge point {CID} connected from 127\.0\.0\.1:\d+$"
        )
        yield poll_until(
            lambda: re.search(connect_line, child.out.decode("utf-8", "replace")),
            timeout=10,
            description="the connect line on stdout",
        )

        transport.signalProcess("TERM")

        async def closed() -> Any:
            await connection.wait_closed()
            return connection.close_code

        close_code = yield loop.run(closed())
        self.assertEqual(close_code, 1001)
        yield poll_until(lambda: child.done, timeout=30, description="twistd to exit")
        # A clean stop: twistd stops the service, logs its last line, then ends itself with the
        # signal it received (Twisted's documented behaviour; systemd counts SIGTERM as success).
        self.assertIn((child.exit_code, child.signal), [(0, None), (None, signal.SIGTERM)], child.output())
        self.assertIn("Server Shut Down.", child.out.decode("utf-8", "replace"), child.output())
        yield poll_until(
            lambda: (
                statuses(presence_topic)[-1:] == ["disconnected"] and statuses(node_topic)[-1:] == ["offline"]
            ),
            timeout=10,
            description="presence disconnected and node offline",
        )
        last = json.loads(recorder.messages(presence_topic)[-1].payload)
        self.assertEqual((last["clientid"], last["node"]), (CID, node))
        self.assertTrue(last.get("reason"), last)
        self.assertNotIn("Traceback", child.output())

    @inlineCallbacks
    def test_node_last_will(self) -> Any:
        """A gateway killed outright is marked offline by its MQTT last will."""
        mqtt_port = yield self.broker_port()
        ws_port = free_port()
        config = write_ini(
            self,
            f"[gateway]\nnode_name = willnode\n[mqtt]\nport = {mqtt_port}\n"
            f"[listeners.ws.default]\nbind = 127.0.0.1:{ws_port}\n",
        )
        recorder = MqttRecorder("127.0.0.1", mqtt_port, "ocpp/gateway/#")
        yield recorder.start()
        self.addCleanup(recorder.stop)
        _child, transport = spawn_twistd(self, config)

        def statuses() -> list[str]:
            return [
                json.loads(m.payload)["status"] for m in recorder.messages("ocpp/gateway/willnode/Presence")
            ]

        yield poll_until(lambda: statuses() == ["online"], timeout=30, description="node online")
        transport.signalProcess("KILL")
        yield poll_until(
            lambda: statuses() == ["online", "offline"], timeout=15, description="will published"
        )

    @inlineCallbacks
    def test_bad_config(self) -> Any:
        """A bad gw.ini makes twistd exit non-zero with one line per problem on stderr and no traceback."""
        config = write_ini(self, "[gateway]\nbogus = 1\n\n[listeners.ws.default]\nbind = 127.0.0.1:0\n")
        child, _transport = spawn_twistd(self, config)
        exit_code = yield poll_until(
            lambda: child.done, timeout=30, description="twistd to exit"
        ).addCallback(lambda _: child.exit_code)
        self.assertNotEqual(exit_code, 0, child.output())
        lines = child.err.decode("utf-8", "replace").splitlines()
        self.assertEqual(lines, [f"{config}: [gateway] bogus: unknown option"], child.output())
        self.assertNotIn("Traceback", child.output())


class PortInUseTests(TestCase):
    """A listener whose port is taken stops twistd at once, in the foreground and as a daemon, with the
    one line naming ``[listeners.ws.<name>] bind`` and no pidfile left behind."""

    timeout = 60

    def setUp(self) -> None:
        self.holder = socket.socket()
        self.addCleanup(self.holder.close)
        self.holder.bind(("127.0.0.1", 0))
        self.holder.listen()
        port = self.holder.getsockname()[1]
        # No broker is needed: start-up stops before the link is started.
        self.config = write_ini(self, f"[mqtt]\nport = 1\n\n[listeners.ws.taken]\nbind = 127.0.0.1:{port}\n")
        self.line = f"{self.config}: [listeners.ws.taken] bind: cannot listen on 127.0.0.1:{port}"

    @inlineCallbacks
    def ended(self, child: TwistdProcess) -> Any:
        # The failure this guards against is a parent that waits for ever; it takes ~1 s here.
        yield poll_until(lambda: child.done, timeout=10, description="twistd to exit")
        self.assertNotEqual(child.exit_code, 0, child.output())

    @inlineCallbacks
    def test_foreground(self) -> Any:
        """``twistd -n`` exits non-zero, logs the line once, prints no traceback and removes its pidfile."""
        child, _transport = spawn_twistd(self, self.config, ("-n",))
        yield self.ended(child)
        output = child.out.decode("utf-8", "replace") + child.err.decode("utf-8", "replace")
        self.assertEqual(output.count(self.line), 1, child.output())
        self.assertNotIn("Traceback", output)
        self.assertFalse((self.config.parent / "twistd.pid").exists())

    @inlineCallbacks
    def test_daemon(self) -> Any:
        """Daemonised twistd: the waiting parent exits non-zero naming the line, the log file holds it
        whole, and the pidfile is gone."""
        pidfile = self.config.parent / "gw.pid"
        logfile = self.config.parent / "gw.log"
        options = ("--pidfile", str(pidfile), "--logfile", str(logfile))
        child, _transport = spawn_twistd(self, self.config, options)
        yield self.ended(child)
        self.assertIn("[listeners.ws.taken] bind", child.err.decode("utf-8", "replace"), child.output())
        self.assertFalse(pidfile.exists())
        log = logfile.read_text(encoding="utf-8")
        self.assertIn(self.line + ": Address already in use", log)
        self.assertNotIn("Traceback", log)
