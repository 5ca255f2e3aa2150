"""PROXY protocol v1 and v2 in front of a listener: Twisted's haproxy wrapper with a header deadline.

This module is where ocppgw reaches Twisted's private ``twisted.protocols.haproxy._*`` modules
(the parsers, ``ProxyInfo``, the wrapper and its ``_proxyInfo``/``_parser`` state): Twisted's only
public PROXY API is ``proxyEndpoint``, which puts the header under the connection limits, has no
header deadline and refuses HAProxy's bare ``PROXY UNKNOWN``. ``tests/test_ws_proxy.py`` checks
every private name used here and fails naming it when a Twisted release changes one.

The layers of a listener with ``proxy_protocol = true`` are TCP (limits, ``ocppgw.ws.limits``) ->
PROXY header -> TLS (wss only) -> WebSocket, as behind HAProxy's ``send-proxy``/``send-proxy-v2``
with TLS passed through. The layer above the header is connected only once the header is parsed,
so everything above it (TLS, Autobahn, logs, presence, the authenticator) sees the address the
header carries as ``getPeer()``. A connection whose header is missing after
``proxy_protocol_timeout``, or is not a valid PROXY header, is closed with one log line naming
the socket's peer.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from ocppgw.core.timers import cancel
from ocppgw.metrics import Metrics
from ocppgw.ws.transport import peer_address

_V1_SIGNATURE = b"PROXY "
_V2_SIGNATURE = V2Parser.PREFIX
_V2_FIXED = 16  # signature, version/command, family/protocol, length


class ProxyProtocolWrapper(HAProxyProtocolWrapper):
    """One connection: reads the PROXY header within the deadline, then relays to the wrapped protocol."""

    _log = Logger()
    factory: ProxyProtocolFactory

    def __init__(self, factory: ProxyProtocolFactory, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self._head = b""
        self._timer: Any = None
        self._refused = False

    def makeConnection(self, transport: Any) -> None:
        """Like ``ProtocolWrapper.makeConnection``, but the wrapped protocol waits for the header."""
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timer = self.factory.reactor.callLater(self.factory.timeout, self._timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self._proxyInfo is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._refused:
            return
        if self._parser is None:
            self._head += data
            head = self._head
            if len(head) >= _V2_FIXED and head[:12] == _V2_SIGNATURE and head[12] & 0xF0 == 0x20:
                self._parser = V2Parser()
            elif head[:6] == _V1_SIGNATURE:
                self._parser = _V1Parser()
            elif (len(head) < _V2_FIXED and _V2_SIGNATURE.startswith(head[:12])) or (
                _V1_SIGNATURE.startswith(head)
            ):
                return  # too short to tell yet
            else:
                self._refuse("not a PROXY protocol header", "proxy_header_invalid")
                return
            data, self._head = head, b""
        try:
            info, remaining = self._parser.feed(data)
        except (InvalidProxyHeader, ValueError) as e:  # Twisted's v1 parser lets int()'s ValueError out
            self._refuse(f"malformed PROXY protocol header ({type(e).__name__})", "proxy_header_invalid")
            return
        if info is None:
            return
        if not _addresses_ok(info):
            self._refuse("malformed PROXY protocol header (not an IP address)", "proxy_header_invalid")
            return
        self._cancel_timer()
        self._proxyInfo = info
        self.wrappedProtocol.makeConnection(self)
        if remaining and self.wrappedProtocol is not None and not self.disconnecting:
            self.wrappedProtocol.dataReceived(remaining)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        self.factory.unregisterProtocol(self)
        if self._proxyInfo is not None and self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)
        self.wrappedProtocol = None  # type: ignore[assignment]

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        cancel(timer)

    def _timed_out(self) -> None:
        self._timer = None
        self._refuse(f"no PROXY protocol header within {self.factory.timeout:g}s", "proxy_header_timeout")

    def _refuse(self, reason: str, metric: str) -> None:
        self._refused = True
        self._cancel_timer()
        self.factory.metrics.inc("handshakes_refused", status="proxy", reason=metric)
        self._log.info(
            "closing connection from {peer}: {reason}", peer=peer_address(self.transport), reason=reason
        )
        self.disconnecting = True
        self.transport.abortConnection()


class _V1Parser(V1Parser):
    """Twisted's v1 parser, also taking the bare ``PROXY UNKNOWN`` line (HAProxy's health checks),
    which it refuses for want of a space after ``UNKNOWN``: like a v2 LOCAL header, no address."""

    @classmethod
    def parse(cls, line: bytes) -> ProxyInfo:
        if line == b"PROXY UNKNOWN":
            return ProxyInfo(line, None, None)
        return super().parse(line)


def _addresses_ok(info: Any) -> bool:
    """Whether the header's TCP addresses are IP addresses (Twisted's v1 parser takes any word)."""
    for address in (info.source, info.destination):
        host = getattr(address, "host", None)
        if host is None:
            continue
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
    return True


class ProxyProtocolFactory(HAProxyWrappingFactory):
    """Wraps a listener's factory so that each connection starts with a PROXY header."""

    protocol = ProxyProtocolWrapper

    def __init__(self, wrappedFactory: Any, reactor: Any, timeout: float, metrics: Metrics) -> None:
        super().__init__(wrappedFactory)
        self.reactor, self.timeout, self.metrics = reactor, timeout, metrics
