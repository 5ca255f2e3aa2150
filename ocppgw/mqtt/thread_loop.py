"""paho's network loop in paho's own thread."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from ocppgw.mqtt.link import PahoLink


class PahoThreadLink(PahoLink):
    """paho's network loop in paho's own thread (``loop_start``), which also reconnects with back-off.

    Every callback arrives from that thread and is handed to the reactor (``ocppgw.mqtt.events``)."""

    def _start_network(self, client: Any) -> None:
        config = self._config
        client.connect_async(config.host, config.port, config.keepalive)
        client.loop_start()

    def _stop_network(self, client: Any) -> Deferred[None]:
        client.disconnect()
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), client.loop_stop)
