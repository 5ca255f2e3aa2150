"""The process itself: how late the reactor runs (event-loop lag) and how long garbage collections stall it.

**Lag.** A timer due every ``tick`` seconds measures how late it fires: the reactor could run nothing
else meanwhile (a long collection, a burst of work in one turn). Exported as the histogram
``ocppgw_event_loop_lag_seconds`` and the gauge ``ocppgw_event_loop_lag_max_seconds`` (the worst lag
of the last minute), and every garbage collection's pause as ``ocppgw_gc_pause_seconds{generation}``.

**Garbage collection.** A full collection walks every object the collector tracks: at 20,000 idle
charge points that is ~600 ms with the reactor stopped. Almost all of them live as long as their
connection, and the gateway leaves no reference cycle behind when a connection closes (Autobahn's
``is_closed`` cycle is broken in ``ocppgw.ws.server``; ``tests/integration/test_gc.py`` checks that a
closed connection leaves no cyclic garbage), so they are freed by reference counting. ``GcPolicy``
therefore moves everything alive out of the collector's view (``gc.freeze``) after start-up and then
every ``freeze_interval`` seconds, after a young-generation collection. The interval is one second
because what CPython walks grows with what was made since the last freeze: at 60 s, 20,000 idle
connections' ping timers made young collections of 10-45 ms and full ones of 100-500 ms; at 1 s
every collection stays under 25 ms. The cost of a mistake is memory, not correctness: a cycle formed
by frozen objects is never collected. The frozen count is not exported: CPython counts the frozen
generation by walking it (~150 ms at 900,000 objects); resident memory shows a leak as well.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from ocppgw.core.timers import cancel
from ocppgw.metrics import Metrics


class LagMonitor:
    """How late a timer due every ``tick`` seconds fires: the reactor's worst stalls."""

    tick = 0.05
    window = 60.0
    """``event_loop_lag_max_seconds`` is the worst lag of the last ``window`` seconds (in 6 slots)."""

    def __init__(self, reactor: Any, metrics: Metrics) -> None:
        self._reactor = reactor
        self._metrics = metrics
        self._call: IDelayedCall | None = None
        self._due = 0.0
        self._slots: deque[tuple[int, float]] = deque()  # (slot number, worst lag in it), oldest first
        metrics.gauge("event_loop_lag_max_seconds", self.worst)

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        cancel(self._call)
        self._call = None

    def _schedule(self) -> None:
        self._due = self._reactor.seconds() + self.tick
        self._call = self._reactor.callLater(self.tick, self._fired)

    def _fired(self) -> None:
        now = self._reactor.seconds()
        lag = max(0.0, now - self._due)
        self._metrics.observe("event_loop_lag_seconds", lag)
        slot = int(now // (self.window / 6))
        slots = self._slots
        if slots and slots[-1][0] == slot:
            if lag > slots[-1][1]:
                slots[-1] = (slot, lag)
        else:
            slots.append((slot, lag))
            while slots and slots[0][0] <= slot - 6:
                slots.popleft()
        self._schedule()

    def worst(self) -> float:
        """The worst lag of the last ``window`` seconds."""
        oldest = int(self._reactor.seconds() // (self.window / 6)) - 5
        return max((lag for slot, lag in self._slots if slot >= oldest), default=0.0)


class GcPolicy:
    """Freezes what is alive after start-up and every ``freeze_interval`` seconds; times each collection."""

    freeze_interval = 1.0
    _log = Logger()

    def __init__(self, reactor: Any, metrics: Metrics) -> None:
        self._reactor = reactor
        self._metrics = metrics
        self._call: IDelayedCall | None = None
        self._started_at: float | None = None

    def start(self) -> None:
        gc.callbacks.append(self._timed)
        gc.collect()  # what start-up left as garbage goes now, not frozen forever
        self.freeze()

    def stop(self) -> None:
        cancel(self._call)
        self._call = None
        if self._timed in gc.callbacks:
            gc.callbacks.remove(self._timed)

    def freeze(self) -> None:
        """Collect the young generations (cheap), then move every object alive out of the collector's view."""
        self._call = None
        gc.collect(1)
        gc.freeze()
        self._call = self._reactor.callLater(self.freeze_interval, self.freeze)

    def _timed(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started_at = time.perf_counter()
        elif self._started_at is not None:
            pause = time.perf_counter() - self._started_at
            self._started_at = None
            self._metrics.observe("gc_pause_seconds", pause, generation=str(info["generation"]))


class RuntimeService(Service):
    """The event-loop lag monitor and the garbage-collection policy, for as long as the gateway runs."""

    name = "runtime"

    def __init__(self, reactor: Any, metrics: Metrics, gc_policy: bool = True) -> None:
        self.lag = LagMonitor(reactor, metrics)
        self.gc = GcPolicy(reactor, metrics) if gc_policy else None

    def startService(self) -> None:
        super().startService()
        self.lag.start()
        if self.gc is not None:
            self.gc.start()

    def stopService(self) -> None:
        super().stopService()
        self.lag.stop()
        if self.gc is not None:
            self.gc.stop()
