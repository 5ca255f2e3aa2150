"""A worker's log records on its stderr, written without blocking its reactor.

stderr is a pipe the master reads; when the master is busy (a reconnect storm: every worker's
connect and disconnect lines pass through it) the pipe fills, and a plain ``write`` stops the
worker's reactor until the master reads. Here lines wait in a buffer, bounded by ``limit`` bytes
(past it they are dropped and counted, and the count is written once there is room again), and go
out when the reactor finds the pipe writable: one ``write`` per reactor turn for all of them. At
exit whatever waits is written blocking, so the last lines (a failure, a stop) are not lost.
"""

from __future__ import annotations

import atexit
import errno
import os
from typing import Any

from twisted.internet import fdesc
from twisted.internet.interfaces import IReactorFDSet, IWriteDescriptor
from zope.interface import implementer

LIMIT = 4 << 20


@implementer(IWriteDescriptor)
class LogPipe:
    """A file-like ``write``/``flush`` for ``FileLogObserver`` over non-blocking ``fd``."""

    def __init__(self, reactor: IReactorFDSet, fd: int = 2, limit: int = LIMIT) -> None:
        self._reactor, self._fd, self._limit = reactor, fd, limit
        self._buffer = bytearray()
        self._writing = False
        self._closed = False
        self.dropped = 0
        fdesc.setNonBlocking(fd)
        atexit.register(self.drain_blocking)

    def write(self, text: str | bytes) -> None:
        if self._closed:
            return
        data = text.encode("utf-8", "replace") if isinstance(text, str) else text
        if len(self._buffer) + len(data) > self._limit:
            self.dropped += 1
            return
        if self.dropped:
            notice = f"(ocppgw: {self.dropped} log lines dropped: the master did not read them)\n"
            self._buffer += notice.encode()
            self.dropped = 0
        self._buffer += data
        if not self._writing:
            self._writing = True
            self._reactor.addWriter(self)

    def flush(self) -> None:
        """Nothing: lines go out when the pipe is writable (``FileLogObserver`` calls this per line)."""

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "worker-log"

    def doWrite(self) -> None:
        try:
            written = os.write(self._fd, self._buffer)
        except BlockingIOError:
            return None
        except OSError as e:
            if e.errno == errno.EINTR:
                return None
            self._close()  # the master is gone; the control channel's end stops the worker
            return None
        del self._buffer[:written]
        if not self._buffer:
            self._writing = False
            self._reactor.removeWriter(self)
        return None

    def connectionLost(self, reason: Any) -> None:
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._buffer.clear()
        if self._writing:
            self._writing = False
            self._reactor.removeWriter(self)

    def drain_blocking(self) -> None:
        """Write what waits, blocking (at exit)."""
        if self._closed or not self._buffer:
            return
        data = memoryview(bytes(self._buffer))
        self._buffer.clear()
        try:
            fdesc.setBlocking(self._fd)
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError:
            pass
