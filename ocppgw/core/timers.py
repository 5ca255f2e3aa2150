"""The one way timers are cancelled: a timer that has fired or was cancelled is left alone."""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall


def cancel(timer: IDelayedCall | None) -> None:
    """Cancel ``timer`` if it is still pending; None and spent timers are fine."""
    if timer is not None and timer.active():
        timer.cancel()
