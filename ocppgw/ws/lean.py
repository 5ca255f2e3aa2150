"""What each WebSocket connection costs the process beyond its own work, kept small for storms.

Three things Autobahn does that the gateway avoids: its ``_connectionMade`` copies each setting named
in ``CONFIG_ATTRS`` from the factory and formats them all with ``pprint`` for a debug line, whether
debug is on or not (10 % of a connection storm); ``dataReceived`` and ``sendData`` (unqueued) build
the colored arguments of a debug line (``hltype``/``hlval``, through ``inspect`` and ``click``) on
every read and write, debug on or not (3 % of a storm; the overrides do the rest of what they do:
``_dataReceived``; ``transport.write`` and the traffic counts); and it fires ``is_closed`` with the
protocol itself, a reference cycle that leaves every closed connection to the garbage collector (and
leaks it once frozen, ``ocppgw.runtime``). ``tests/test_ws_server.py`` and
``tests/integration/test_gc.py`` fail if an Autobahn release changes any of them.

Memory, per open connection: Autobahn gives each one an empty ``deque`` for queued sends (760 bytes,
used only by synchronous or chopped sends, which the gateway never asks for) and keeps the request,
the 101 answer and the request line as bytes after the handshake, for its test suite. The queue is
made when first needed and those three are dropped once the connection is open: ~1.2 KB of the
~20 KB a connection costs.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

NO_QUEUE: tuple[()] = ()
"""``send_queue`` until something is queued: empty and falsy, as Autobahn's empty deque."""

FACTORY_SETTINGS: tuple[str, ...] = tuple(WebSocketServerProtocol.CONFIG_ATTRS)
"""The protocol settings Autobahn takes from the factory (``setProtocolOptions``) per connection."""


class LeanServerProtocol(WebSocketServerProtocol):
    """A server protocol that formats nothing for debug lines and leaves no cycle."""

    CONFIG_ATTRS: tuple[str, ...] = ()  # Autobahn then formats an empty list; connectionMade copies

    def connectionMade(self) -> None:
        factory = self.factory
        for name in FACTORY_SETTINGS:
            setattr(self, name, getattr(factory, name))
        super().connectionMade()
        self.send_queue = NO_QUEUE

    def succeedHandshake(self, res: Any) -> None:
        super().succeedHandshake(res)
        self.http_request_data = self.http_response_data = self.http_status_line = None

    def dataReceived(self, data: bytes) -> None:
        self._dataReceived(data)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if sync or chopsize or self.send_queue:
            if self.send_queue is NO_QUEUE:
                self.send_queue = deque()
            super().sendData(data, sync, chopsize)
            return
        self.transport.write(data)
        state = self.state
        if state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif state == self.STATE_CONNECTING or state == self.STATE_PROXY_CONNECTING:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.is_closed.addCallback(_forget)


def _forget(_result: object) -> None:
    """``is_closed``'s result (the protocol) dropped."""
