"""The listener's ``backlog`` reaches the kernel: ``ss`` reports it for the real listening socket."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.integration.harness import GatewayHarness

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
