"""What a listener does with a connection before its 101: the request's byte budget and refusals.

A mixin for ``OcppServerProtocol``, over Autobahn's public server hooks (``succeedHandshake``,
``failHandshake``): the request head is held here until it ends, within ``max_handshake_size``
(431 past it), and every refusal is answered the same way: counted, no server name, no word of the
request quoted back, 426 with ``Sec-WebSocket-Version: 13`` for any other WebSocket version.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from ocppgw.ws.handshake import (
    WEBSOCKET_VERSION,
    HeadTooLarge,
    RequestHead,
    is_token,
    refusal_label,
    refusal_response,
    version_refused,
)
from ocppgw.ws.transport import peer_address


class UpgradeGuard:
    """The handshake half of a WebSocket server protocol (mixed in before Autobahn's class)."""

    _log = Logger()
    _head: RequestHead | None = None  # the request's bytes until the 101
    factory: Any
    transport: Any
    peer_address: str
    state: int
    STATE_OPEN: int
    wasClean: bool

    def _handshake_bytes(self, data: bytes) -> bytes:
        """What Autobahn may see of the request yet, within ``max_handshake_size`` (else 431)."""
        head = self._head
        if head is None:
            head = self._head = RequestHead(self.factory.max_handshake_size)
        try:
            return head.feed(data)
        except HeadTooLarge:
            self._head = None
            self._log.info(
                "refused handshake from {peer}: 431, request over max_handshake_size ({limit} bytes)",
                peer=peer_address(self.transport),
                limit=head.limit,
            )
            self.failHandshake("request_too_large", 431)
            return b""

    def succeedHandshake(self, res: Any) -> None:
        """After the 101: the bytes a charge point sent too early go to the open WebSocket."""
        super().succeedHandshake(res)  # type: ignore[misc]
        head, self._head = self._head, None
        if head is not None and self.state == self.STATE_OPEN:
            held = head.release()
            if held:
                self.dataReceived(held)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        """Every refused upgrade request: counted, no server name, and no word of the request quoted.

        A WebSocket version other than 13 (and a GET without Upgrade) gets 426 with the version the
        gateway speaks (RFC 6455 4.4). Autobahn's own free-text reasons are logged here, shortened;
        the gateway's reasons (tokens) were logged where they were decided.
        """
        headers = list(responseHeaders or ())
        if version_refused(getattr(self, "http_headers", None) or {}):
            code, reason = 426, "unsupported_websocket_version"
        if code == 426:
            headers = [("Upgrade", "websocket"), ("Sec-WebSocket-Version", WEBSOCKET_VERSION)]
        elif code == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="ocppgw"'))
        label = refusal_label(code, reason)
        if not is_token(reason):
            self._log.info(
                "refused handshake from {peer}: {status} {label} ({detail})",
                peer=self.peer_address or peer_address(self.transport),
                status=code,
                label=label,
                detail=reason[:200],
            )
        self.factory.metrics.inc("handshakes_refused", status=str(code), reason=label)
        self.wasClean = True  # an orderly HTTP answer, already logged: Autobahn would warn of it again
        self.sendData(refusal_response(code, reason, headers))
        self.dropConnection(abort=False)
