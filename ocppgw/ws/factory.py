"""One Autobahn server factory per listener, with the protocol options set explicitly."""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory

from ocppgw.bridge import Gateway
from ocppgw.config import GatewaySection, ListenerSection
from ocppgw.metrics import Metrics
from ocppgw.ws.handshake import SUBPROTOCOL
from ocppgw.ws.protocol import OcppServerProtocol, OcppTlsServerProtocol


class OcppServerFactory(WebSocketServerFactory):
    """Builds ``OcppServerProtocol`` instances for one listener."""

    protocol = OcppServerProtocol

    def __init__(
        self, gateway: Gateway, listener: ListenerSection, settings: GatewaySection, metrics: Metrics
    ) -> None:
        super().__init__(protocols=[SUBPROTOCOL], server="ocppgw")
        if listener.tls is not None:
            self.protocol = OcppTlsServerProtocol
        self.gateway = gateway
        self.listener = listener
        self.metrics = metrics
        self.setProtocolOptions(
            maxFramePayloadSize=settings.max_frame_size,
            maxMessagePayloadSize=settings.max_frame_size,
            openHandshakeTimeout=settings.idle_timeout,
            closeHandshakeTimeout=5,
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout,
            autoPingSize=12,
            failByDrop=True,
            echoCloseCodeReason=False,
        )
