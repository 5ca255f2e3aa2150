"""The listener's ``backlog`` reaches the kernel: ``ss`` reports it for the real listening socket; a
backlog above ``net.core.somaxconn`` is capped there, and twistd says so at start-up."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ocppgw.listen_queue import somaxconn
from tests.integration.harness import GatewayHarness
from tests.integration.twistd_process import spawn_twistd, until_listening, write_ini
from tests.support import MosquittoBroker, free_port

SS = shutil.which("ss") or "/bin/ss"  # iproute2; scripts/test installs it when missing
BACKLOG = 37  # below Twisted's default (50) and below any sane net.core.somaxconn: never ambiguous


def listen_backlog(port: int) -> int:
    """The backlog of the TCP socket listening on ``port``: ``ss`` shows it as Send-Q (blocking)."""
    output = subprocess.run(
        [SS, "-ltnH", "sport", "=", f":{port}"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    (line,) = output.splitlines()  # State Recv-Q Send-Q Local:Port Peer:Port
    return int(line.split()[2])


class ListenBacklogTests(TestCase):
    @inlineCallbacks
    def test_backlog_reaches_the_kernel(self) -> Any:
        """The listening socket's queue is the configured one, not Twisted's default of 50 (a value below
        both 50 and net.core.somaxconn, so neither default nor cap can pass for it), and the listener
        serves charge points."""
        gw = GatewayHarness(self, f"[listeners.ws.default]\nbacklog = {BACKLOG}\n")
        yield gw.start()
        backlog = yield deferToThread(listen_backlog, gw.port)
        self.assertEqual(backlog, BACKLOG)
        client = yield gw.connect("CP-BACKLOG")
        result = yield gw.boot(client, "CP-BACKLOG")
        self.assertEqual(result.status, "Accepted")

    @inlineCallbacks
    def test_kernel_cap_said_at_start_up(self) -> Any:
        """twistd with the largest backlog gw.ini allows: the kernel's queue is that or its cap,
        whichever is less, and the start-up warning names the listener exactly when the cap bit."""
        broker = MosquittoBroker(self)
        yield broker.start()
        ws_port = free_port()
        config = write_ini(
            self,
            f"[gateway]\nmountpoint = backlog-{ws_port}/\n\n[mqtt]\nport = {broker.port}\n\n"
            f"[listeners.ws.default]\nbind = 127.0.0.1:{ws_port}\nbacklog = 65535\n",
        )
        child, _transport = spawn_twistd(self, config)

        yield until_listening(child, ws_port)
        cap = somaxconn()
        assert cap is not None
        backlog = yield deferToThread(listen_backlog, ws_port)
        self.assertEqual(backlog, min(65535, cap))
        warned = "[listeners.ws.default] backlog = 65535, but the kernel caps listen queues at"
        self.assertEqual(warned in child.output(), cap < 65535, child.output())
