"""The broker link as a Twisted service: started first, stopped last, so nothing published is lost."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from ocppgw.core.ports import IBrokerLink


class LinkService(Service):
    """Starts ``link``; on stop waits up to ``shutdown_timeout`` for the broker's acknowledgements."""

    name = "mqtt"

    def __init__(self, link: IBrokerLink, shutdown_timeout: float) -> None:
        self.link = link
        self.shutdown_timeout = shutdown_timeout

    def startService(self) -> None:
        super().startService()
        self.link.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.link.stop(self.shutdown_timeout)
