"""The Autobahn server of one listener: its factory and the protocol of one charge point.

OCPP logic lives in the session; the protocol only turns WebSocket events into
session calls and session output into WebSocket frames.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ocppgw.config import GatewaySection, ListenerSection
from ocppgw.core.ports import Credentials, Decision, IAuthenticator, PeerIdentity
from ocppgw.core.router import Router
from ocppgw.core.session import ChargePointSession
from ocppgw.core.timers import cancel
from ocppgw.memory import InflightBudget
from ocppgw.metrics import Metrics
from ocppgw.tls.listener import identity_refusal, peer_identity
from ocppgw.ws.handshake import SUBPROTOCOL, Refusal, basic_credentials, cid_from_path, pick_subprotocol
from ocppgw.ws.transport import peer_address


class OcppServerProtocol(WebSocketServerProtocol):
    """One charge point's WebSocket."""

    _log = Logger()
    factory: OcppServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.cid: str | None = None
        self.peer_address = ""
        self._session: ChargePointSession | None = None
        self._close_reason = ""
        self._identity: PeerIdentity | None = None  # the client certificate's, on wss
        self._inflight = 0  # bytes of the message being received, counted in factory.inflight
        self._message_bytes = 0  # bytes of it received so far (more than declared when inflated)
        self._over_budget = False  # refused by max_inflight_bytes: what still arrives is dropped

    # -- handshake -------------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> Deferred[str] | str:
        listener = self.factory.listener
        self.peer_address = peer_address(self.transport)
        try:
            cid = cid_from_path(request.path, listener.path)
            subprotocol = pick_subprotocol(list(request.protocols))
        except Refusal as refusal:
            self.factory.metrics.inc("handshakes_refused", status=str(refusal.status), reason=refusal.reason)
            self._log.info(
                "refused handshake from {peer} for {path!r} ({protocols}): {status} {reason}",
                peer=self.peer_address,
                path=request.path[:300],
                protocols=",".join(request.protocols)[:100],
                status=refusal.status,
                reason=refusal.reason,
            )
            raise ConnectionDeny(refusal.status, refusal.reason) from None
        identity = peer_identity(self.transport) if listener.tls is not None else None
        mismatch = identity_refusal(listener.tls, cid, identity)
        if mismatch is not None:
            self.factory.metrics.inc(
                "handshakes_refused", status="403", reason="certificate_identity_mismatch"
            )
            self._log.info(
                "refused charge point {cid} from {peer}: 403 {reason} (certificate DN {dn!r})",
                cid=cid,
                peer=self.peer_address,
                reason=mismatch,
                dn=identity.dn if identity is not None else None,
            )
            raise ConnectionDeny(403, "certificate_identity_mismatch")
        self._identity = identity
        username, password = basic_credentials(request.headers.get("authorization"), cid)
        credentials = Credentials(
            cid=cid,
            peer=self.peer_address,
            listener=listener.label,
            username=username,
            password=password,
            certificate_cn=identity.cn if identity is not None else None,
            certificate_dn=identity.dn if identity is not None else None,
        )
        d = self.factory.authenticator.authenticate(credentials)

        def decided(decision: Decision) -> str:
            if not decision.allowed:
                self.factory.metrics.inc("handshakes_refused", status="401", reason="not_authorized")
                self._log.info(
                    "charge point {cid} from {peer} not authorized (username {username!r}): {reason}",
                    cid=cid,
                    peer=self.peer_address,
                    username=username,
                    reason=decision.reason,
                )
                raise ConnectionDeny(401, "not_authorized")
            self.cid = cid
            return subprotocol

        d.addCallback(decided)
        return d

    def onOpen(self) -> None:
        try:
            assert self.cid is not None
            self._session = self.factory.router.attach(
                self.cid, self, self.factory.listener, self.peer_address, self._identity
            )
        except Exception:
            self._log.failure("attaching charge point {cid} failed", cid=self.cid)
            self.close(1011, "internal error")

    # -- frames ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        session = self._session
        if session is not None:
            session.activity()
        super().dataReceived(data)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self._session
        if session is None:
            return
        if isBinary:
            self.factory.metrics.inc("frames_invalid", code="binary")
            self._log.warn("binary frame from {cid}: OCPP-J uses text frames; closing", cid=self.cid)
            self.close(1003, "binary frames are not OCPP-J")
            return
        try:
            session.frame_received(payload.decode("utf-8"))
        except Exception:
            self._log.failure("handling a frame from {cid} failed", cid=self.cid)

    # -- bytes being received (max_inflight_bytes) ---------------------------

    def onMessageFrameBegin(self, length: int) -> None:
        """A frame header declared ``length`` bytes: count them before they arrive."""
        super().onMessageFrameBegin(length)
        if not self.failedByMe and not self._over_budget:
            self._reserve(length)

    def onMessageFrameData(self, payload: bytes) -> None:
        if self._over_budget:
            return
        received = self._message_bytes + len(payload)
        self._message_bytes = received
        if received > self._inflight and not self._reserve(received - self._inflight):
            return  # inflated past what was declared and past the budget
        super().onMessageFrameData(payload)

    def onMessageEnd(self) -> None:
        if self._over_budget:
            self.message_data = None
            return
        try:
            super().onMessageEnd()  # onMessage: the core has the frame
        finally:
            self._release_inflight()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._release_inflight()
        super().connectionLost(reason)

    def _reserve(self, nbytes: int) -> bool:
        inflight = self.factory.inflight
        if inflight.reserve(nbytes):
            self._inflight += nbytes
            return True
        self._over_budget = True
        self._release_inflight()
        self.factory.metrics.inc("inflight_refused", listener=self.factory.listener.label)
        self._log.warn(
            "closing {cid} from {peer}: a message of {size} bytes more would pass max_inflight_bytes"
            " ({limit} bytes being received)",
            cid=self.cid,
            peer=self.peer_address,
            size=nbytes,
            limit=inflight.limit,
        )
        self.close(1009, "gateway busy receiving: message refused")
        return False

    def _release_inflight(self) -> None:
        held, self._inflight = self._inflight, 0
        self._message_bytes = 0
        if held:
            self.factory.inflight.release(held)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session, self._session = self._session, None
        if session is None or self.cid is None:
            return
        why = self._close_reason or _describe_close(wasClean, code, reason, self.wasNotCleanReason)
        try:
            self.factory.router.detach(self.cid, self, why)
        except Exception:
            self._log.failure("detaching charge point {cid} failed", cid=self.cid)

    # -- output used by the gateway ---------------------------------------

    def send_text(self, text: str) -> None:
        if self.state == self.STATE_OPEN:
            self.sendMessage(text.encode("utf-8"), isBinary=False)

    def close(self, code: int, reason: str) -> None:
        if not self._close_reason:
            self._close_reason = reason
        if self.state != self.STATE_OPEN:
            if self.transport is not None and self.state != self.STATE_CLOSED:
                self.dropConnection(abort=True)
            return
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code, reason)
        else:
            # sendClose refuses the RFC 6455 codes a server also owes its peers
            # (1001 going away, 1003 unsupported data, 1011 internal error).
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123], isReply=False)


@implementer(IHandshakeListener)
class OcppTlsServerProtocol(OcppServerProtocol):
    """A wss charge point: the TLS handshake must finish within the listener's handshake_timeout."""

    _tls_timer: Any = None

    def connectionMade(self) -> None:
        tls = self.factory.listener.tls
        if tls is not None:
            self._tls_timer = self.factory.reactor.callLater(tls.handshake_timeout, self._tls_timed_out)
        super().connectionMade()

    def handshakeCompleted(self) -> None:
        """Called by the TLS layer once the TLS handshake is done."""
        self._cancel_tls_timer()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_tls_timer()
        super().connectionLost(reason)

    def _cancel_tls_timer(self) -> None:
        timer, self._tls_timer = self._tls_timer, None
        cancel(timer)

    def _tls_timed_out(self) -> None:
        self._tls_timer = None
        self.factory.metrics.inc("handshakes_refused", status="tls", reason="tls_handshake_timeout")
        self._log.info("TLS handshake from {peer} timed out", peer=peer_address(self.transport))
        if self.transport is not None:
            self.transport.abortConnection()


class OcppServerFactory(WebSocketServerFactory):
    """Builds ``OcppServerProtocol`` instances for one listener."""

    protocol = OcppServerProtocol

    def __init__(
        self,
        router: Router,
        authenticator: IAuthenticator,
        listener: ListenerSection,
        settings: GatewaySection,
        metrics: Metrics,
        reactor: Any,
        inflight: InflightBudget | None = None,
    ) -> None:
        """``inflight``: the gateway-wide count of bytes being received, shared by every listener
        (default: one of this listener's own, limited by ``settings.max_inflight_bytes``)."""
        super().__init__(protocols=[SUBPROTOCOL], server="ocppgw", reactor=reactor)
        self.inflight = inflight if inflight is not None else InflightBudget(settings.max_inflight_bytes)
        if listener.tls is not None:
            self.protocol = OcppTlsServerProtocol
        self.router = router
        self.authenticator = authenticator
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


def _describe_close(was_clean: bool, code: int | None, reason: str | None, unclean: str | None) -> str:
    if code is None:
        return "closed" if was_clean else (unclean or "connection lost")
    text = f"closed by charge point ({code}"
    return text + (f": {reason})" if reason else ")")
