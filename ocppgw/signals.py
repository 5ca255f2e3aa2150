"""SIGHUP for the gateway's certificate reload, chained to the handler it replaces (twistd's log
rotation), and put back when the gateway stops."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger


class Sighup:
    """Runs ``action`` in the reactor thread on SIGHUP while installed."""

    _log = Logger()

    def __init__(self, reactor: Any, action: Callable[[], Any]) -> None:
        self.reactor = reactor
        self.action = action
        self._previous: tuple[Any] | None = None

    def install(self) -> None:
        previous = signal.getsignal(signal.SIGHUP)

        def on_sighup(signum: int, frame: Any) -> None:
            self.reactor.callFromThread(self.action)
            if callable(previous):
                previous(signum, frame)

        try:
            signal.signal(signal.SIGHUP, on_sighup)
        except ValueError:  # not the main thread: no signals here
            self._log.warn("SIGHUP certificate reload not installed: not in the main thread")
            return
        self._previous = (previous,)

    def restore(self) -> None:
        if self._previous is not None:
            (previous,) = self._previous
            signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)
            self._previous = None
