"""Memory the gateway holds for charge points: bounded while messages arrive, given back after.

``InflightBudget`` counts the bytes of WebSocket messages being received, over every listener
(``[gateway] max_inflight_bytes``). A message is counted from the moment its frame header declares
its length until it has been handed to the core or its connection is gone, so a thousand charge
points each starting a 900 KB frame cannot make the gateway hold 900 MB: the frame that would pass
the budget closes its own connection (1009) and no other.

``MemoryTrimmer`` is why memory also goes down again. CPython frees a large buffer with ``free``,
and glibc keeps what was freed in its arenas for reuse: after a burst of large messages the
process stays at its peak for good. ``malloc_trim(0)`` hands those pages back. It walks every
arena, so it runs only after enough large buffers were freed, at most once per interval, and after
the current reactor turn (when the buffers are really gone). Without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from ocppgw.core.timers import cancel

_log = Logger()


def glibc_malloc_trim() -> Callable[[], Any] | None:
    """``malloc_trim(0)`` of the C library this process runs on, or None when it has none (musl,
    macOS): only glibc keeps freed arenas this way and only glibc has the call."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryTrimmer:
    """Gives freed heap memory back to the operating system once large buffers have been freed.

    ``released(n)`` is told of every buffer of ``n`` bytes that is let go; buffers smaller than
    ``large`` are ignored (the allocator reuses them anyway). Once ``threshold`` bytes of large
    buffers were released, a trim is scheduled: at once (after this reactor turn) when the last one
    is at least ``interval`` seconds ago, else when that interval is over. Buffers handed on are
    often freed later (a message leaves the MQTT outbox on the broker's PUBACK): one more trim runs
    ``settle`` seconds after the last large release.
    """

    large = 64 * 1024
    threshold = 4 * 1024 * 1024
    interval = 1.0
    settle = 3.0

    def __init__(self, clock: Any, trim: Callable[[], Any] | None = None, metrics: Any = None) -> None:
        """``trim``: what trims (default: glibc's ``malloc_trim(0)``, None without glibc)."""
        self._clock = clock
        self._trim = trim if trim is not None else glibc_malloc_trim()
        self._metrics = metrics
        self._freed = 0  # large bytes released since the last trim
        self._last: float | None = None  # when the last trim ran
        self._call: Any = None
        self._settle_call: Any = None
        self.trims = 0

    @property
    def available(self) -> bool:
        """Whether this process can trim at all (glibc)."""
        return self._trim is not None

    def released(self, nbytes: int) -> None:
        if nbytes < self.large or self._trim is None:
            return
        self._freed += nbytes
        if self._settle_call is not None and self._settle_call.active():
            self._settle_call.reset(self.settle)
        else:
            self._settle_call = self._clock.callLater(self.settle, self._settled)
        if self._freed < self.threshold or self._call is not None:
            return
        delay = 0.0
        if self._last is not None:
            delay = max(0.0, self._last + self.interval - self._clock.seconds())
        self._call = self._clock.callLater(delay, self._run)

    def _settled(self) -> None:
        self._settle_call = None
        if self._call is None and self._trim is not None:
            self._run()

    def _run(self) -> None:
        self._call = None
        self._freed = 0
        self._last = self._clock.seconds()
        assert self._trim is not None
        try:
            self._trim()
        except Exception:  # a C library that refuses: nothing to hand back, nothing to stop for
            _log.failure("malloc_trim failed")
            self._trim = None
            return
        self.trims += 1
        if self._metrics is not None:
            self._metrics.inc("memory_trims")

    def stop(self) -> None:
        """Forget a scheduled trim (the gateway is stopping)."""
        call, self._call = self._call, None
        cancel(call)
        settle, self._settle_call = self._settle_call, None
        cancel(settle)


class InflightBudget:
    """Bytes of WebSocket messages being received now, gateway-wide, against ``limit``.

    One instance is shared by every listener's factory; each connection reserves the length a frame
    header declares (and what a compressed frame inflates to beyond it) and releases it all when its
    message is handed on or the connection ends.
    """

    def __init__(self, limit: int, trimmer: MemoryTrimmer | None = None) -> None:
        self.limit = limit
        self.used = 0
        self._trimmer = trimmer

    def reserve(self, nbytes: int) -> bool:
        """Count ``nbytes`` more; False (and nothing counted) when that would pass the limit."""
        used = self.used + nbytes
        if used > self.limit:
            return False
        self.used = used
        return True

    def release(self, nbytes: int) -> None:
        """``nbytes`` reserved earlier are no longer held."""
        self.used -= nbytes
        trimmer = self._trimmer
        if trimmer is not None:
            trimmer.released(nbytes)
