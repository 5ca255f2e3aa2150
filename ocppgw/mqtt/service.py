"""The broker link as a Twisted service: started first, stopped last, so nothing published is lost."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from ocppgw.config import GatewayConfig
from ocppgw.core.ports import IBrokerLink
from ocppgw.core.router import node_will
from ocppgw.metrics import Metrics
from ocppgw.mqtt.reactor_loop import PahoReactorLink
from ocppgw.mqtt.thread_loop import PahoThreadLink


def broker_link(config: GatewayConfig, reactor: Any, metrics: Metrics) -> IBrokerLink:
    """The ``[mqtt]`` link of ``config``'s member, its last will the member's ``offline`` state."""
    link_class = PahoReactorLink if config.mqtt.network_loop == "reactor" else PahoThreadLink
    return link_class(reactor, config.mqtt, metrics, will=node_will(config))


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
