"""``twistd -n ocppgw --config gw.ini`` as a child process of a test: spawn, output, how it ended."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.support import poll_until, port_accepts

ROOT = Path(__file__).resolve().parent.parent.parent
# What the twistd console script does, with this interpreter; ``-m twisted.scripts.twistd`` runs nothing.
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


class TwistdProcess(protocol.ProcessProtocol):
    """Collects a child's output and how it ended: ``exit_code``, or ``signal`` when a signal ended it."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.done = False
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        self.done = True
        self.exit_code = getattr(reason.value, "exitCode", None)
        self.signal = getattr(reason.value, "signal", None)
        self.ended.callback(self.exit_code)

    def output(self) -> str:
        return (
            f"--- twistd stdout\n{self.out.decode('utf-8', 'replace')[-4000:]}\n"
            f"--- twistd stderr\n{self.err.decode('utf-8', 'replace')[-4000:]}"
        )


def spawn_twistd(
    testcase: TestCase, config: Path, twistd_options: tuple[str, ...] = ("-n", "--pidfile=")
) -> tuple[TwistdProcess, Any]:
    """Run ``twistd <twistd_options> ocppgw --config <config>`` on this checkout; killed at cleanup."""
    child = TwistdProcess()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = [sys.executable, "-c", TWISTD, *twistd_options, "ocppgw", "--config", str(config)]
    transport = reactor.spawnProcess(child, sys.executable, args, env=env, path=str(config.parent))

    def kill() -> Any:
        if child.done:
            return None
        transport.signalProcess("KILL")
        return child.ended

    testcase.addCleanup(kill)
    return child, transport


def until_listening(child: TwistdProcess, port: int) -> Deferred[Any]:
    """Fires once ``port`` accepts; fails at once, with the child's output, if twistd exits first."""

    def listening() -> bool:
        if child.done:
            raise AssertionError(f"twistd exited with {child.exit_code} before listening\n{child.output()}")
        return port_accepts(port)

    return poll_until(listening, timeout=30, description=f"twistd listening on {port}")


def write_ini(testcase: TestCase, text: str) -> Path:
    directory = Path(testcase.mktemp()).absolute()
    directory.mkdir(parents=True)
    path = directory / "gw.ini"
    if "[api]" not in text:  # the management API would take 127.0.0.1:18083, shared by parallel tests
        text += "\n[api]\nbind = 127.0.0.1:0\n"
    path.write_text(text, encoding="utf-8")
    return path
