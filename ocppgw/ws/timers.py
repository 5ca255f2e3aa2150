"""Autobahn's WebSocket timers on the reactor's own clock.

Autobahn schedules the opening-handshake timeout (``idle_timeout``), the auto-ping interval and its
pong timeout (``ping_interval``, ``ping_timeout``) and the closing-handshake timeout through
``factory._batched_timer``, a txaio batched timer that rounds every deadline down to a whole second:
a 500 ms timeout fires at once, a 3 s one after 2.2 s. Autobahn offers no public option to change
this, so ``use_reactor_clock`` replaces that one attribute with a ``ReactorTimer``, which hands each
call unchanged to ``callLater`` of the reactor the factory was given: a deadline fires no earlier
than asked, and as soon after as the reactor gets to it. Autobahn's own handlers still run when a
timer fires, so what a timeout does (drop, abort) is Autobahn's.

``tests/test_ws_timers.py`` checks the deadlines on a ``Clock`` and fails naming ``_batched_timer``
if an Autobahn release stops using it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from ocppgw.core.timers import cancel

BATCHED_TIMER = "_batched_timer"


class ReactorCall:
    """One pending call; ``cancel`` is harmless once it fired or was cancelled (Autobahn may do both)."""

    __slots__ = ("delayed",)

    def __init__(self, delayed: IDelayedCall) -> None:
        self.delayed = delayed

    def cancel(self) -> None:
        cancel(self.delayed)


class ReactorTimer:
    """What Autobahn asks of its batched timer (``call_later``), on ``clock.callLater``."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> ReactorCall:
        return ReactorCall(self.clock.callLater(delay, func, *args, **kwargs))


def use_reactor_clock(factory: Any, clock: IReactorTime) -> None:
    """Run ``factory``'s WebSocket timers on ``clock`` instead of txaio's whole-second buckets."""
    if not hasattr(factory, BATCHED_TIMER):
        raise TypeError(
            f"{type(factory).__name__} has no {BATCHED_TIMER}: this Autobahn schedules its timers "
            "another way; see ocppgw/ws/timers.py"
        )
    setattr(factory, BATCHED_TIMER, ReactorTimer(clock))
