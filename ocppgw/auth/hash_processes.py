"""bcrypt and pbkdf2 in helper processes of their own, at a low CPU priority.

A hashing thread inside the gateway shares the gateway's scheduling group: with autogroup scheduling
(Linux's default for sessions) its nice value only ranks it against the reactor thread, while the
broker and the other processes a round trip passes through still see the gateway's whole group
asking for a second core. A storm of bcrypt handshakes then delays every other charge point's
messages (bench/README.md, issue 10). Here the hashing runs in spawned processes that leave the
gateway's session (``setsid``: an autogroup of their own) and set that group's nice and their own to
``NICE`` (10: about a tenth of a busy core's share): the reactor and the broker come first, yet a
machine busy with other work still hashes (at 19 a bcrypt check could wait past its handshake's
timeout whenever both cores were busy, and every bcrypt handshake got 503; ``SCHED_IDLE`` was measured
worse for the other charge points' round trips: bench/README.md, issue 10). Last, each asks for the
shortest scheduler slice (``SLICE_NS``, 0.1 ms; Linux 6.12 and later, ``ocppgw.auth.sched_slice``): on
the EEVDF scheduler a running bcrypt check otherwise keeps a woken reactor or broker waiting until its
default slice (about 0.75 ms) is used, at each hop of a round trip; older kernels ignore or refuse it.

The pool threads of ``ocppgw.auth.pool.BlockingPool`` still bound and shed the work (queue limit,
late jobs skipped); each of them hands its job here and waits, the GIL released.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from twisted.logger import Logger

from ocppgw.auth.sched_slice import set_fair_slice

T = TypeVar("T")

NICE = 10
SLICE_NS = 100_000  # the shortest slice Linux grants a fair task (0.1 ms)
_AUTOGROUP = "/proc/self/autogroup"

_log = Logger()


def low_priority() -> None:
    """In a hashing process, before its first job: a session, an autogroup and a nice value of
    ``NICE``, then a scheduler slice of ``SLICE_NS``. The jobs run in this (main) thread of the process,
    the one that ``sched_setattr`` changes.

    Each step that the system refuses (no autogroup, a container without /proc, a kernel older than
    6.12 or another machine for the slice) leaves that one as it was; the others still apply."""
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
    set_fair_slice(SLICE_NS, os.getpriority(os.PRIO_PROCESS, 0))


def _ready() -> int:
    return os.getpid()


class HashProcesses:
    """Up to ``size`` hashing processes, spawned (not forked: the gateway has threads) when first
    needed, replaced when one dies."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.size, mp_context=multiprocessing.get_context("spawn"), initializer=low_priority
                )
            return self._executor

    def warm(self) -> list[int]:
        """Start every process now (blocking, a pool thread's job): the first handshakes then do not
        wait for an interpreter to start. Returns their process ids."""
        executor = self._current()
        return sorted({f.result() for f in [executor.submit(_ready) for _ in range(self.size)]})

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a hashing process, blocking the calling thread until it returns;
        its exception is raised here. A process that died (killed, out of memory) is replaced and
        the job tried once more in a new one."""
        for attempt in (1, 2):
            executor = self._current()
            try:
                return executor.submit(function, *args).result()
            except BrokenProcessPool:
                with self._lock:
                    if self._executor is executor:
                        self._executor = None
                executor.shutdown(wait=False, cancel_futures=True)
                _log.warn("a hashing process died: starting a new one (attempt {attempt})", attempt=attempt)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def shutdown(self) -> None:
        """Let the running jobs finish and the processes exit (blocking: call it off the reactor)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
