"""The bounded thread pool every authentication backend runs its blocking work in (a driver's calls,
SQLite; bcrypt and pbkdf2 go to ``hash_workers``): never the reactor's shared pool, so a slow database
cannot starve the MQTT connect or another backend.

Under overload it sheds work instead of queueing it: a job that can no longer finish before its
handshake's deadline is skipped (``Expired``; the handshake has had, or is about to get, its 503),
and past ``max_queued`` waiting jobs a new one fails at once (``Overloaded``), so the answer comes
fast and memory stays bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")

MAX_QUEUED = 1024  # jobs waiting for a worker, per pool, by default


class Expired(Exception):
    """A queued job reached a worker too late to answer its handshake in time: not run."""


class Overloaded(Exception):
    """``max_queued`` jobs are already waiting: this one was refused without queueing."""


def in_own_thread(reactor: Any, blocking: Callable[[], object]) -> Deferred[None]:
    """Run ``blocking`` (joining a pool's workers, which may sit in a driver call until its socket
    timeout) in a thread of its own, firing in the reactor thread when it returns."""
    d: Deferred[None] = Deferred()

    def run() -> None:
        try:
            blocking()
        finally:
            reactor.callFromThread(d.callback, None)

    threading.Thread(target=run, name="ocppgw-auth-stop", daemon=True).start()
    return d


class BlockingPool:
    """``size`` threads of one backend's own; ``run`` returns a Deferred fired in the reactor thread."""

    def __init__(self, reactor: Any, name: str, size: int, max_queued: int = MAX_QUEUED) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=0, maxthreads=max(1, size), name=name)
        self.max_queued = max_queued
        self._lock = threading.Lock()
        self._waiting = 0  # jobs handed to the pool that no worker has taken yet
        self._typical = 0.0  # smoothed run time of a job, seconds: how late one may still start

    @property
    def started(self) -> bool:
        return bool(self._pool.started)

    @property
    def waiting(self) -> int:
        """Jobs queued that no worker has taken yet."""
        return self._waiting

    def start(self) -> None:
        if not self._pool.started:
            self._pool.start()

    def stop(self) -> Deferred[None]:
        """Stop without blocking the reactor: the workers finish their jobs first."""
        if not self._pool.started:
            return succeed(None)
        return in_own_thread(self._reactor, self._pool.stop)

    def run(self, timeout: float, function: Callable[..., T], *args: Any) -> Deferred[T]:
        """``function(*args)`` in a worker, for a handshake that is answered ``timeout`` seconds from
        now. Skipped (``Expired``) when it reaches a worker with less time left than a job
        typically takes (at most half of ``timeout``, so a slow spell cannot lock every job out);
        refused (``Overloaded``) when ``max_queued`` jobs are waiting already."""
        with self._lock:
            if self._waiting >= self.max_queued:
                return fail(Overloaded(f"{self.max_queued} jobs waiting"))
            self._waiting += 1
        deadline = time.monotonic() + timeout
        half = timeout / 2

        def job() -> T:
            began = time.monotonic()
            with self._lock:
                self._waiting -= 1
            if began + min(self._typical, half) > deadline:
                raise Expired()
            try:
                return function(*args)
            finally:
                self._typical += (time.monotonic() - began - self._typical) / 8

        return deferToThreadPool(self._reactor, self._pool, job)

