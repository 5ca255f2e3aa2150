"""One listener as a Twisted service: its port is bound before privileges are dropped, and a port that
cannot be had is reported as one config line, not a traceback from deep in the reactor."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.abstract import isIPv6Address
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from ocppgw.config import ListenerSection, problem_line
from ocppgw.ws.limits import ListenerLimits
from ocppgw.ws.server import OcppServerProtocol


def cannot_listen(source: str, section: str, host: str, port: int, error: CannotListenError) -> str:
    """The problem line of a port that cannot be had: ``gw.ini: [section] bind: cannot listen on ...``."""
    reason = error.socketError.strerror if isinstance(error.socketError, OSError) else error.socketError
    return problem_line(source, section, "bind", f"cannot listen on {host}:{port}: {reason or error}")


def listener_family(host: str) -> socket.AddressFamily:
    """The address family Twisted's ``listenTCP`` would bind ``host`` with."""
    return socket.AF_INET6 if isIPv6Address(host) else socket.AF_INET


def ensure_bound(bind: Callable[[], str | None]) -> None:
    """Run ``bind``; its problem line as an ordinary exception (what twistd reports and cleans up after)."""
    problem = bind()
    if problem is not None:
        raise RuntimeError(problem)


class ListenerService(Service):
    """Listens with ``factory`` (``ocppgw.ws.stack.listener_stack``) on ``listener``'s bind, or on the
    listening socket ``fd`` a worker inherited from its master (``ocppgw.workers``)."""

    _log = Logger()

    def __init__(
        self,
        listener: ListenerSection,
        factory: ListenerLimits,
        reactor: Any,
        source: str,
        fd: int | None = None,
    ) -> None:
        self.setName(listener.label)
        self.listener = listener
        self.factory = factory
        self.reactor = reactor
        self.source = source
        self.fd = fd
        self.port: IListeningPort | None = None

    def bind(self) -> str | None:
        """Listen now, unless already listening; the problem line when the port cannot be had."""
        if self.port is not None:
            return None
        listener = self.listener
        if self.fd is not None:  # the reactor listens on a duplicate: ``fd`` stays for the next bind
            self.port = self.reactor.adoptStreamPort(self.fd, listener_family(listener.host), self.factory)
            return None
        try:
            # backlog: the kernel caps it at net.core.somaxconn.
            self.port = self.reactor.listenTCP(
                listener.port, self.factory, backlog=listener.backlog, interface=listener.host
            )
        except CannotListenError as e:
            return cannot_listen(self.source, listener.section, listener.host, listener.port, e)
        return None

    def privilegedStartService(self) -> None:
        ensure_bound(self.bind)
        super().privilegedStartService()

    def startService(self) -> None:
        ensure_bound(self.bind)
        super().startService()
        assert self.port is not None
        address = self.port.getHost()
        self._log.info(
            "listener {name} on {host}:{port}", name=self.name, host=address.host, port=address.port
        )

    def stopService(self) -> Deferred[None]:
        """Stop accepting; connections already open are the router's to close."""
        super().stopService()
        port, self.port = self.port, None
        self.factory.stop()
        return maybeDeferred(port.stopListening) if port is not None else succeed(None)

    @property
    def connections(self) -> int:
        """Live TCP connections this listener accepted."""
        return self.factory.live

    def close_connections(self, code: int, reason: str) -> None:
        """Close every connection this listener accepted (the API removed or stopped it): a WebSocket
        with ``code`` and ``reason``, one still in its PROXY header or TLS handshake aborted."""
        for outer in list(self.factory.protocols):
            inner: Any = outer
            while inner is not None and not isinstance(inner, OcppServerProtocol):
                inner = getattr(inner, "wrappedProtocol", None)
            if inner is not None:
                inner.close(code, reason)
            elif outer.transport is not None:
                outer.transport.abortConnection()
