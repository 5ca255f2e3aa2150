"""One worker process as the master sees it: spawning it with its sockets, relaying its log, its
control channel, and restarting it when it dies.

A worker writes its log events as JSON records on stderr (``jsonFileLogObserver``); the master
re-emits each into its own log with a ``worker`` field (the member name), shown as the event's
system in text logs. Any other output (a traceback before logging began, a config problem line)
is logged as one line per line, with the same field.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger, globalLogPublisher
from twisted.python.failure import Failure

from ocppgw.core.timers import cancel
from ocppgw.logtext import RECORD, relayed_event
from ocppgw.workers.control import ControlChannel, Handler

RESTART_DELAY = 0.5  # after a worker that had started dies: back within 1 s
BACKOFF_MAX = 30.0  # the longest wait between attempts of a worker that dies while starting
CONTROL_FD = 3
_MAX_LINE = 1 << 20


def exit_text(reason: Failure) -> str:
    """How a process ended: ``exit code 1`` or ``signal 9 (SIGKILL)``."""
    code = getattr(reason.value, "exitCode", None)
    number = getattr(reason.value, "signal", None)
    if number is not None:
        try:
            return f"signal {number} ({signal.Signals(number).name})"
        except ValueError:
            return f"signal {number}"
    return f"exit code {code}"


def restart_delay(failures: int) -> float:
    """The wait before the next start after ``failures`` deaths in a row before being ready."""
    if failures <= 0:
        return RESTART_DELAY
    return float(min(RESTART_DELAY * 2**failures, BACKOFF_MAX))


class _Output(ProcessProtocol):
    """The worker's stdout and stderr, re-emitted line by line; its end, passed on."""

    _log = Logger()

    def __init__(self, member: str, ended: Callable[[Failure], None]) -> None:
        self.member = member
        self.ended = ended
        self._buffers = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD not in self._buffers:
            return
        buffer = self._buffers[childFD] + data
        *lines, rest = buffer.split(b"\n")
        if len(rest) > _MAX_LINE:  # a line without end: emit what came so far
            lines.append(rest)
            rest = b""
        self._buffers[childFD] = rest
        for line in lines:
            self.line(childFD, line)

    def line(self, fd: int, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        if text.startswith(RECORD):
            event = relayed_event(text, self.member, time.time())
            if event is not None:
                globalLogPublisher(event)
                return
        if text.strip(RECORD):
            emit = self._log.warn if fd == 2 else self._log.info
            emit("{worker}: {line}", worker=self.member, line=text, log_system=self.member)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in self._buffers.items():
            if rest:
                self.line(fd, rest)
        self._buffers = {1: b"", 2: b""}
        self.ended(reason)


class WorkerProcess:
    """Worker ``index`` of the node: spawned on ``sockets`` (listener label -> this worker's socket),
    restarted by the master through ``on_exit``; ``channel`` is its control channel once spawned."""

    _log = Logger()

    def __init__(
        self,
        index: int,
        member: str,
        config_path: str,
        sockets: Mapping[str, socket.socket],
        reactor: Any,
        on_exit: Callable[[WorkerProcess, Failure], None],
        handlers: Mapping[str, Handler] | None = None,
        on_ready: Callable[[WorkerProcess], None] | None = None,
    ) -> None:
        """``on_ready``: called each time the worker (re)starts serving."""
        self.index = index
        self.on_ready = on_ready
        self.member = member
        self.config_path = config_path
        self.sockets = dict(sockets)
        self.reactor = reactor
        self.on_exit = on_exit
        self.handlers = dict(handlers or {})
        self.handlers.setdefault("ready", self._ready)
        self.transport: Any = None
        self.channel: ControlChannel | None = None
        self.ready = False
        self.failures = 0  # deaths in a row before becoming ready
        self.status: dict[str, Any] = {}
        self.restart_call: Any = None
        self._ended: list[Deferred[None]] = []

    @property
    def running(self) -> bool:
        return self.transport is not None

    def arguments(self, fds: Sequence[tuple[str, int]]) -> list[str]:
        """The worker's command line: ``python -m ocppgw.worker --config ... --listener ws.x=4``."""
        args = [sys.executable, "-m", "ocppgw.worker", "--config", self.config_path]
        args += ["--index", str(self.index), "--control", str(CONTROL_FD)]
        for label, fd in fds:
            args += ["--listener", f"{label}={fd}"]
        return args

    def spawn(self) -> None:
        """Start the process: fd 3 is its end of the control socket pair, 4... its listening sockets."""
        self.restart_call = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        child_fds: dict[int, Any] = {1: "r", 2: "r", CONTROL_FD: theirs.fileno()}
        fds = []
        for number, (label, sock) in enumerate(sorted(self.sockets.items()), start=CONTROL_FD + 1):
            child_fds[number] = sock.fileno()
            fds.append((label, number))
        self.ready = False
        self.status = {}
        try:
            output = _Output(self.member, self._ended_with)
            self.transport = self.reactor.spawnProcess(
                output, sys.executable, self.arguments(fds), env=dict(os.environ), childFDs=child_fds
            )
        finally:
            theirs.close()
        channel = ControlChannel(self.handlers)
        factory = Factory()
        factory.buildProtocol = lambda addr: channel  # type: ignore[method-assign]
        try:
            self.reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, factory)
        finally:
            ours.close()  # the reactor holds a duplicate
        self.channel = channel
        self._log.info("worker {worker} started (pid {pid})", worker=self.member, pid=self.transport.pid)

    def _ready(self) -> None:
        self.ready = True
        self.failures = 0
        if self.on_ready is not None:
            self.on_ready(self)

    def _ended_with(self, reason: Failure) -> None:
        if not self.ready:
            self.failures += 1
        self.transport = None
        self.ready = False
        channel, self.channel = self.channel, None
        if channel is not None and channel.transport is not None:
            channel.transport.loseConnection()
        waiting, self._ended = self._ended, []
        for d in waiting:
            d.callback(None)
        self.on_exit(self, reason)

    def ended(self) -> Deferred[None]:
        """Fires once the process has ended (at once when none runs)."""
        if self.transport is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._ended.append(d)
        return d

    def signal(self, name: str) -> None:
        """Send ``name`` (``TERM``, ``KILL``) to the process if it runs."""
        if self.transport is not None:
            try:
                self.transport.signalProcess(name)
            except OSError:  # ended meanwhile; processEnded follows
                pass

    def call(self, op: str, timeout: float, **args: Any) -> Deferred[Any]:
        """``op`` on the worker's control channel, failing after ``timeout`` seconds."""
        channel = self.channel
        if channel is None or not self.ready:
            d: Deferred[Any] = Deferred()
            d.errback(RuntimeError(f"worker {self.member} is not running"))
            return d
        return channel.call(op, **args).addTimeout(timeout, self.reactor)

    def cancel_restart(self) -> None:
        cancel(self.restart_call)
        self.restart_call = None
