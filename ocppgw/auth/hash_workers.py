"""bcrypt and pbkdf2 in low-priority processes of their own, driven from the reactor.

Each hashing process (``ocppgw.auth.hash_child``) leaves the gateway's session (``setsid``: an
autogroup of its own) and sets that group's nice and its own to ``NICE`` (10: about a tenth of a busy
core's share), so the reactor and the broker come first. Where the gateway can make one, the
processes also go into a CPU group at idle priority (``ocppgw.auth.idle_group``): nice 10 still let
a storm's hashing take the CPU the connected charge points' round trips needed.

Jobs go to a process on its standard input and answers come back on its standard output, read by the
reactor like any other connection: no thread of the gateway's takes part. Through a thread pool and
``concurrent.futures``, each answer passed three threads and the GIL before the reactor saw it
(1.4 ms at the median on two busy cores, against 0.4 ms here), and the other charge points' messages
waited behind that hand-off (bench/README.md, issue 10, "Tenth session").

Under overload the work is shed, not queued: a job that can no longer finish before its handshake's
deadline is skipped (``Expired``) and past ``max_queued`` waiting jobs a new one fails at once
(``Overloaded``), as ``ocppgw.auth.pool.BlockingPool`` does for the backends' blocking drivers.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import ocppgw
from ocppgw.auth.idle_group import IdleGroup
from ocppgw.auth.pool import Expired, Overloaded

T = TypeVar("T")

NICE = 10
HEADER = struct.Struct(">I")  # the length of each pickled job or answer that follows it
MAX_ANSWER = 1 << 20  # bytes: a longer answer means a broken process
STOP_GRACE = 10.0  # seconds a process has on stop to finish its job and exit before it is killed
QUICK_DEATH = 5.0  # seconds: a process that ends this soon having answered nothing is respawned later
RESPAWN_MAX = 30.0  # seconds between attempts at most while new processes keep dying at once
_AUTOGROUP = "/proc/self/autogroup"

_log = Logger()


class HashingProcessDied(Exception):
    """The hashing process running a job ended before answering, and so did the one that retried it."""


def low_priority() -> None:
    """In a hashing process, before its first job: a session, an autogroup and a nice value of ``NICE``.

    Each step that the system refuses (no autogroup, a container without /proc) leaves that one as
    it was; the others still apply."""
    try:
        os.setsid()
    except OSError:
        pass
    try:
        with open(_AUTOGROUP, "w") as f:
            f.write(str(NICE))
    except OSError:
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
    except OSError:
        pass


@dataclass(eq=False)
class _Job:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    deadline: float  # reactor seconds by which its handshake is answered
    half: float  # half its timeout: the most a typical run time may hold it back
    result: Deferred[Any]  # cancelled by its handshake's timeout: see HashWorkers._forget
    tries: int = 0
    began: float = 0.0


def _expire(job: _Job) -> None:
    if not job.result.called:  # not cancelled by its handshake's timeout meanwhile
        job.result.errback(Expired())


class _HashingProcess(ProcessProtocol):
    """One hashing process, one job at a time."""

    def __init__(self, workers: HashWorkers, spawned: float) -> None:
        self.workers = workers
        self.spawned = spawned
        self.job: _Job | None = None
        self.answers = 0  # answered so far
        self.ended: Deferred[None] = Deferred()
        self.pid: int | None = None
        self._buffer = b""

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def send(self, job: _Job) -> None:
        self.job = job
        data = pickle.dumps((job.function, job.args), pickle.HIGHEST_PROTOCOL)
        self.transport.write(HEADER.pack(len(data)) + data)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != 1:
            for line in data.decode("utf-8", "replace").splitlines():
                _log.warn("hashing process {pid}: {line}", pid=self.pid, line=line[:500])
            return
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buffer)
            if length > MAX_ANSWER or self.job is None:
                _log.error("hashing process {pid} sent what it was not asked for: ending it", pid=self.pid)
                self._buffer = b""
                self.transport.signalProcess("KILL")
                return
            if len(self._buffer) < HEADER.size + length:
                return
            body = self._buffer[HEADER.size : HEADER.size + length]
            self._buffer = self._buffer[HEADER.size + length :]
            job, self.job = self.job, None
            self.answers += 1
            self.workers.answered(self, job, body)

    def processEnded(self, reason: Failure) -> None:
        job, self.job = self.job, None
        self.workers.ended(self, job, reason)
        self.ended.callback(None)


class HashWorkers:
    """``size`` hashing processes, spawned by ``start`` and replaced when one ends; ``run`` returns a
    Deferred fired in the reactor thread with the job's result, or failed with its exception."""

    def __init__(
        self,
        reactor: Any,
        size: int,
        max_queued: int,
        idle_group: Callable[[], tuple[IdleGroup | None, str]] | None = None,
    ) -> None:
        """``idle_group``: makes the group the processes join at idle priority (``make_idle_group``);
        None leaves them at nice 10 only."""
        self._reactor = reactor
        self._make_group = idle_group
        self._group: IdleGroup | None = None
        self.size = max(1, size)
        self.max_queued = max_queued
        self._queue: deque[_Job] = deque()
        self._idle: list[_HashingProcess] = []
        self._all: list[_HashingProcess] = []
        self._typical = 0.0  # smoothed run time of a job, seconds: how late one may still start
        self._running = False
        self._quick_deaths = 0  # processes in a row that ended before answering anything
        self._respawns: list[Any] = []  # delayed calls of _spawn after quick deaths

    @property
    def started(self) -> bool:
        return self._running

    @property
    def waiting(self) -> int:
        """Jobs queued that no process has taken yet."""
        return len(self._queue)

    def pids(self) -> list[int]:
        """The hashing processes' ids."""
        return sorted(p.pid for p in self._all if p.pid is not None)

    def start(self) -> None:
        """Spawn the processes now, so that the first handshakes do not wait for an interpreter."""
        if self._running:
            return
        self._running = True
        if self._make_group is not None:
            self._group, where = self._make_group()
            if self._group is not None:
                _log.info("hashing processes run at idle CPU priority, in {group}", group=where)
            else:
                _log.info("hashing processes run at nice {nice}, without an idle CPU group: {why}",
                          nice=NICE, why=where)  # fmt: skip
        for _ in range(self.size):
            self._spawn()

    def _spawn(self) -> None:
        self._respawns = [call for call in self._respawns if call.active()]
        if not self._running:
            return
        process = _HashingProcess(self, self._reactor.seconds())
        root = os.path.dirname(os.path.dirname(os.path.abspath(ocppgw.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-m", "ocppgw.auth.hash_child"]
        fds = {0: "w", 1: "r", 2: "r"}
        try:
            self._reactor.spawnProcess(process, sys.executable, argv, env=env, childFDs=fds)
        except OSError as error:
            _log.error("a hashing process could not be started: {error}", error=error)
            self._respawn_later()
            return
        self._all.append(process)
        self._idle.append(process)
        if self._group is not None and process.pid is not None:
            try:
                self._group.join(process.pid)  # before its first job: see _dispatch just below
            except OSError as error:
                _log.warn("hashing process {pid} could not join {group}: {error}", pid=process.pid,
                          group=str(self._group.path), error=error.strerror or error)  # fmt: skip
        self._dispatch()

    def _respawn_later(self) -> None:
        self._quick_deaths += 1
        delay = min(RESPAWN_MAX, 0.5 * 2 ** (self._quick_deaths - 1))
        self._respawns.append(self._reactor.callLater(delay, self._spawn))

    def run(self, timeout: float, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """``function(*args)`` (a module-level function, pickled by name) in a hashing process, for a
        handshake answered ``timeout`` seconds from now. Skipped when a process is free for it with less
        time left than a job typically takes (at most half of ``timeout``, so a slow spell cannot lock
        every job out), and failed with ``Expired`` at its deadline; refused (``Overloaded``) at once
        when ``max_queued`` jobs wait."""
        if not self._running:
            return fail(Overloaded("the hashing processes are stopped"))
        if len(self._queue) >= self.max_queued:
            return fail(Overloaded(f"{self.max_queued} jobs waiting"))
        result: Deferred[T] = Deferred(canceller=lambda _: self._forget(job))
        job = _Job(function, args, self._reactor.seconds() + timeout, timeout / 2, result)
        self._queue.append(job)
        self._dispatch()
        return job.result

    def _forget(self, job: _Job) -> None:
        """A cancelled job (its handshake timed out) leaves the queue; a running one's answer is
        dropped by its cancelled Deferred."""
        try:
            self._queue.remove(job)
        except ValueError:
            pass

    def _dispatch(self) -> None:
        while self._idle and self._queue:
            job = self._queue.popleft()
            now = self._reactor.seconds()
            if now + min(self._typical, job.half) > job.deadline:
                # failed at its deadline, when its handshake's own timeout answers it too, not in
                # this turn: the turn that lets a charge point in stays short (issue 10)
                self._reactor.callLater(max(0.0, job.deadline - now), _expire, job)
                continue
            job.began = now
            job.tries += 1
            self._idle.pop().send(job)

    def answered(self, process: _HashingProcess, job: _Job, body: bytes) -> None:
        """A process's answer to ``job``: the next job goes to it before ``job``'s callbacks run."""
        self._quick_deaths = 0
        self._typical += (self._reactor.seconds() - job.began - self._typical) / 8
        self._idle.append(process)
        self._dispatch()
        if job.result.called:  # cancelled: its handshake has had its answer
            return
        try:
            ok, value = pickle.loads(body)
        except Exception as error:
            job.result.errback(error)
            return
        if ok:
            job.result.callback(value)
        else:
            job.result.errback(value)

    def ended(self, process: _HashingProcess, job: _Job | None, reason: Failure) -> None:
        """A process ended: replaced while running (after a back-off when it never answered), its job
        tried once more, then failed with ``HashingProcessDied``."""
        self._all.remove(process)
        if process in self._idle:
            self._idle.remove(process)
        if self._running or job is not None:
            _log.warn(
                "hashing process {pid} ended: {why}", pid=process.pid, why=reason.getErrorMessage()
            )
        if job is not None:
            if job.tries < 2 and self._running:
                self._queue.appendleft(job)
            else:
                job.result.errback(HashingProcessDied("the hashing process ended before answering"))
        if self._running:
            if process.answers == 0 and self._reactor.seconds() - process.spawned < QUICK_DEATH:
                self._respawn_later()
            else:
                self._spawn()

    def stop(self) -> Deferred[None]:
        """Refuse new jobs and fail the queued ones; the running ones finish and every process exits
        (killed after ``STOP_GRACE`` seconds). Fires when every process has ended."""
        self._running = False
        for call in self._respawns:
            if call.active():
                call.cancel()
        self._respawns = []
        while self._queue:
            self._queue.popleft().result.errback(Overloaded("the hashing processes are stopped"))
        if not self._all:
            self._leave_group()
            return succeed(None)
        ended = [process.ended for process in self._all]
        for process in self._all:
            process.transport.closeStdin()
        killer = self._reactor.callLater(STOP_GRACE, self._kill_all)
        d = gatherResults(ended, consumeErrors=True)

        def done(_: object) -> None:
            if killer.active():
                killer.cancel()
            self._leave_group()

        d.addBoth(done)
        return d

    def _leave_group(self) -> None:
        group, self._group = self._group, None
        if group is not None:
            group.remove()

    def _kill_all(self) -> None:
        for process in list(self._all):
            try:
                process.transport.signalProcess("KILL")
            except Exception:  # ended meanwhile
                pass
