"""The Autobahn server of one listener: its factory and the protocol of one charge point.

OCPP logic lives in the session; the protocol only turns WebSocket events into
session calls and session output into WebSocket frames.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ocppgw.config import GatewaySection, ListenerSection
from ocppgw.core.peertext import clip
from ocppgw.core.ports import Credentials, Decision, IAuthenticator, Outcome, PeerIdentity
from ocppgw.core.router import Router
from ocppgw.core.session import ChargePointSession
from ocppgw.core.timers import cancel
from ocppgw.memory import InflightBudget
from ocppgw.metrics import Metrics
from ocppgw.tls.listener import identity_refusal, peer_identity
from ocppgw.ws.compression import deflate_accept, refuse_compression
from ocppgw.ws.handshake import (
    WEBSOCKET_VERSION,
    Refusal,
    basic_credentials,
    cid_from_path,
    forwarded_address,
    host_of,
    pick_subprotocol,
)
from ocppgw.ws.lean import LeanServerProtocol
from ocppgw.ws.limits import abort_reason
from ocppgw.ws.timers import use_reactor_clock
from ocppgw.ws.transport import peer_address
from ocppgw.ws.upgrade import UpgradeGuard

_FAILED_PREFIX = "I dropped the WebSocket TCP connection: "  # Autobahn's wording when it fails a connection

CLOSE_HANDSHAKE_TIMEOUT = 5.0
"""Seconds a charge point has to answer the gateway's close frame before the socket is aborted."""


class OcppServerProtocol(UpgradeGuard, LeanServerProtocol):
    """One charge point's WebSocket."""

    _log = Logger()
    factory: OcppServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.cid: str | None = None
        self.username: str | None = None  # from Basic credentials, shown by the management API
        self.peer_address = ""
        self._session: ChargePointSession | None = None
        self._close_reason = ""  # set when the gateway ends the connection, with
        self._close_cause = ""  # its cause: the ``reason`` label of ``disconnects``
        self._identity: PeerIdentity | None = None  # the client certificate's, on wss
        self._inflight = 0  # bytes of the message being received, counted in factory.inflight
        self._message_bytes = 0  # bytes of it received so far (more than declared when inflated)
        self._over_budget = False  # refused by max_inflight_bytes: what still arrives is dropped

    # -- handshake -------------------------------------------------------

    def onConnect(self, request: ConnectionRequest) -> Deferred[str | None] | str | None:
        listener = self.factory.listener
        self.peer_address = peer_address(self.transport)
        if listener.proxy_address_header:
            forwarded = forwarded_address(
                host_of(self.peer_address),
                request.headers.get(listener.proxy_address_header),
                listener.trusted_proxies,
            )
            self.peer_address = forwarded or self.peer_address
        try:
            cid = cid_from_path(request.path, listener.path, self.factory.router.unsafe_cid_chars)
            subprotocol = pick_subprotocol(
                request.protocols, listener.supported_subprotocols, listener.fail_if_no_subprotocol
            )
        except Refusal as refusal:
            self._log.info(
                "refused handshake from {peer} for {path} ({protocols}): {status} {reason}",
                peer=self.peer_address,
                path=clip(request.path, 300),
                protocols=clip(",".join(request.protocols), 100),
                status=refusal.status,
                reason=refusal.reason,
            )
            raise ConnectionDeny(refusal.status, refusal.reason) from None
        identity = peer_identity(self.transport) if listener.tls is not None else None
        mismatch = identity_refusal(listener.tls, cid, identity)
        if mismatch is not None:
            self._log.info(
                "refused charge point {cid} from {peer}: 403 {reason} (certificate DN {dn})",
                cid=cid,
                peer=self.peer_address,
                reason=clip(mismatch),
                dn=clip(identity.dn if identity is not None else None, 300),
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

        def decided(decision: Decision) -> str | None:
            if decision.outcome is Outcome.UNAVAILABLE:
                raise ConnectionDeny(503, "authentication_backend_unavailable")
            if not decision.allowed:
                # ignore and deny alike: the reason the authenticator gave, not_authorized by default
                reason = decision.reason if decision.outcome is Outcome.DENY else "not_authorized"
                raise ConnectionDeny(401, reason or "not_authorized")
            self.cid = cid
            self.username = username
            return subprotocol

        d.addCallback(decided)
        return d

    def onOpen(self) -> None:
        try:
            assert self.cid is not None
            self._session = self.factory.router.attach(
                self.cid, self, self.factory.listener, self.peer_address, self._identity, self.username
            )
        except Exception:
            self._log.failure("attaching charge point {cid} failed", cid=self.cid)
            self.close(1011, "internal error")

    # -- frames ----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.state != self.STATE_OPEN:
            if self.state == self.STATE_CONNECTING:
                data = self._handshake_bytes(data)
            elif self.state == self.STATE_CLOSED:
                data = b""  # a refused or dropped peer still sending: Autobahn would only buffer it
            if not data:
                return
        session = self._session
        if session is not None:
            session.activity()
        super().dataReceived(data)

    def _max_message_size_exceeded(self, msg_size: int, max_msg_size: int, reason: str) -> None:
        """A message over ``max_frame_size`` (inflated, when compressed): a 1009 close, then the drop.

        Autobahn's hook (26.x) fails the connection, which with ``failByDrop`` is a bare TCP drop
        the charge point sees as 1006; what it is owed is 1009 (message too big). Further frames of
        the message are ignored (``failedByMe``) until the close handshake ends or times out.
        """
        self.failedByMe = True
        self.factory.metrics.inc("frames_invalid", code="too_big")
        self._log.info(
            "message from {cid} over {limit} bytes: closing with 1009", cid=self.cid, limit=max_msg_size
        )
        self.note_close("frame_too_big", f"message over {max_msg_size} bytes")
        self.close(1009, "message too big")

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
            text = payload.decode("utf-8")
        except UnicodeDecodeError:  # Autobahn checks UTF-8 first unless told not to
            self.factory.metrics.inc("frames_invalid", code="utf8")
            self.close(1007, "invalid UTF-8")
            return
        try:
            session.frame_received(text)
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
        # Autobahn cancels its other timers when the connection is lost, not this one: a peer that
        # leaves without answering our close frame would hold the protocol for the close timeout.
        timer, self.closeHandshakeTimeoutCall = self.closeHandshakeTimeoutCall, None
        if timer is not None:
            timer.cancel()  # a ReactorCall (ocppgw.ws.timers): harmless once it has fired

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
            cid=self.cid, peer=self.peer_address, size=nbytes, limit=inflight.limit,
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
        cause, why = self._ending(wasClean, code, reason)
        try:
            self.factory.router.detach(self.cid, self, why, cause)
        except Exception:
            self._log.failure("detaching charge point {cid} failed", cid=self.cid)

    # -- who ended the connection ------------------------------------------

    def note_close(self, cause: str, reason: str) -> None:
        """The gateway is ending this connection; the first cause noted is the one reported.

        ``cause`` is the ``reason`` label of the ``disconnects`` metric, ``reason`` the text."""
        if not self._close_reason:
            self._close_cause, self._close_reason = cause, reason

    def onAutoPingTimeout(self) -> None:
        self.note_close("ping_timeout", f"no pong within {self.autoPingTimeout:g}s")
        super().onAutoPingTimeout()

    def _ending(self, was_clean: bool, code: int | None, reason: str | None) -> tuple[str, str]:
        """(cause, text) of the end of this connection: the gateway's own reason when it closed it.

        Autobahn only reports the transport's view (a 1006 for every abort), so what the gateway
        did is noted before the connection drops: by ``close``, by the ping timeout, by the limits
        layer under this protocol (``abort_reason``), or by Autobahn failing the connection."""
        if not self._close_reason:
            below = abort_reason(self.transport)
            if below is not None:
                self.note_close(*below)
            elif self.failedByMe:
                failed = (self.wasNotCleanReason or "WebSocket protocol error").removeprefix(_FAILED_PREFIX)
                self.note_close("protocol_error", failed)
        if self._close_reason:
            return self._close_cause, f"closed by gateway: {self._close_reason}"
        return _describe_close(was_clean, code, reason, self.wasNotCleanReason)

    def traffic(self) -> tuple[int, int, int, int]:
        """(bytes in, messages in, bytes out, messages out) on the wire: Autobahn's own counters,
        kept for every connection anyway, so the management API adds nothing per message."""
        stats = self.trafficStats
        return (
            stats.preopenIncomingOctetsWireLevel + stats.incomingOctetsWireLevel,
            stats.incomingWebSocketMessages,
            stats.preopenOutgoingOctetsWireLevel + stats.outgoingOctetsWireLevel,
            stats.outgoingWebSocketMessages,
        )

    # -- output used by the gateway ---------------------------------------

    def send_text(self, text: str) -> None:
        """Write one text frame; never raises (the core calls this from anywhere).

        The session already bounded the frame by max_outgoing_frame_size; Autobahn's
        maxMessagePayloadSize is max_frame_size, meant for what charge points send, and sendMessage
        would raise PayloadExceededError past it, so it is lifted for this call only (the send is
        synchronous: no incoming byte is checked meanwhile)."""
        if self.state != self.STATE_OPEN:
            return
        limit = self.maxMessagePayloadSize
        try:
            self.maxMessagePayloadSize = 0
            self.sendMessage(text.encode("utf-8", "surrogatepass"), isBinary=False)
        except Exception as e:
            self._write_failed("sending a frame", e)
        finally:
            self.maxMessagePayloadSize = limit

    def close(self, code: int, reason: str) -> None:
        """Close with ``code``, or abort when the WebSocket is not open; never raises."""
        self.note_close("gateway", reason)
        try:
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
        except Exception as e:
            self._write_failed("closing", e)

    def _write_failed(self, doing: str, error: Exception) -> None:
        """A write the gateway owes its callers raised: log it without a traceback, drop the link
        (a frame may be half written) and go on."""
        self._log.error(
            "{doing} for {cid} failed ({error}): dropping the connection",
            doing=doing, cid=self.cid, error=clip(repr(error)),
        )
        self.note_close("write_failed", f"{doing} failed")
        transport = self.transport
        if transport is not None:
            try:
                transport.abortConnection()
            except Exception as e:
                self._log.error("aborting {cid} failed too ({error})", cid=self.cid, error=clip(repr(e)))


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
        # server=None: no Server header in any answer (no banner for scanners)
        super().__init__(protocols=list(listener.supported_subprotocols), server=None, reactor=reactor)
        use_reactor_clock(self, reactor)
        self.inflight = inflight if inflight is not None else InflightBudget(settings.max_inflight_bytes)
        if listener.tls is not None:
            self.protocol = OcppTlsServerProtocol
        self.router = router
        self.authenticator = authenticator
        self.listener = listener
        self.metrics = metrics
        self.max_handshake_size = settings.max_handshake_size
        self.setProtocolOptions(
            versions=[int(WEBSOCKET_VERSION)],
            webStatus=False,  # Autobahn's status page names its version: a GET without Upgrade gets 426
            perMessageCompressionAccept=(
                deflate_accept(settings.max_frame_size) if listener.compress else refuse_compression
            ),
        )
        self.setProtocolOptions(
            maxFramePayloadSize=settings.max_frame_size,
            maxMessagePayloadSize=settings.max_frame_size,
            openHandshakeTimeout=settings.idle_timeout,
            closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT,
            autoPingInterval=settings.ping_interval,
            autoPingTimeout=settings.ping_timeout,
            autoPingSize=12,
            failByDrop=True,
            echoCloseCodeReason=False,
        )


def _describe_close(
    was_clean: bool, code: int | None, reason: str | None, unclean: str | None
) -> tuple[str, str]:
    """(cause, text) of a connection the charge point or the network ended."""
    if not was_clean:
        return "connection_lost", f"connection lost ({unclean or 'no close handshake'})"
    if code is None:
        return "charge_point", "closed by charge point"
    return "charge_point", f"closed by charge point ({code}" + (f": {reason})" if reason else ")")
