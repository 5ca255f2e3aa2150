"""One listener's protocol stack, built in one place from the outside in:
TCP -> connection limits -> PROXY header -> TLS -> WebSocket -> the core.

The limits sit on the socket, so a refused connection costs no header parse and no TLS handshake;
the PROXY layer sits under TLS, as behind HAProxy with TLS passed through, so TLS, Autobahn, the
logs, presence and the authenticator all see the address the header carries.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from ocppgw.config import GatewaySection, ListenerSection
from ocppgw.core.ports import IAuthenticator
from ocppgw.core.router import Router
from ocppgw.memory import InflightBudget
from ocppgw.metrics import Metrics
from ocppgw.ws.limits import ListenerLimits
from ocppgw.ws.proxy import ProxyProtocolFactory
from ocppgw.ws.server import OcppServerFactory

_log = Logger()


def listener_stack(
    listener: ListenerSection,
    settings: GatewaySection,
    router: Router,
    authenticator: IAuthenticator,
    metrics: Metrics,
    reactor: Any,
    tls_context: IOpenSSLContextFactory | None = None,
    inflight: InflightBudget | None = None,
) -> ListenerLimits:
    """The factory to listen with: ``listener``'s limits around its whole stack.

    ``tls_context`` (wss) is the listener's reloadable context factory; ``inflight`` the gateway's
    count of bytes being received, shared by every listener.
    """
    websocket = OcppServerFactory(router, authenticator, listener, settings, metrics, reactor, inflight)
    websocket.setProtocolOptions(tcpNoDelay=listener.nodelay)
    inner: Any = websocket
    if tls_context is not None:
        inner = TLSMemoryBIOFactory(tls_context, False, inner)
    if listener.proxy_protocol:
        inner = ProxyProtocolFactory(inner, reactor, listener.proxy_protocol_timeout, metrics)
    if listener.ignored_options:
        _log.info(
            "listener {listener}: {keys} accepted and ignored (no meaning for a Twisted listener)",
            listener=listener.label,
            keys=", ".join(listener.ignored_options),
        )
    return ListenerLimits(inner, listener, reactor, metrics)
