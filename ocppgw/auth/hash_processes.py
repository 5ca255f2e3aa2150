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
worse for the other charge points' round trips: bench/README.md, issue 10).

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

T = TypeVar("T")

NICE = 10
_AUTOGROUP = "/proc/self/autogroup"

_log = Logger()


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
