"""A Twisted Web server the authentication tests start on a free port: it records every request and
answers what the test set, or nothing at all; it can be stopped (its connections dropped) and
started again on the same port."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet import reactor as default_reactor
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.http import Request as HttpRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site


@dataclass
class Seen:
    """One request as the server read it."""

    method: bytes
    uri: bytes
    headers: dict[bytes, bytes]
    body: bytes


@dataclass
class Reply:
    """What the server answers: status, headers, body; ``hang`` answers nothing."""

    status: int = 200
    headers: dict[bytes, bytes] = field(default_factory=lambda: {b"content-type": b"application/json"})
    body: bytes = b'{"result": "allow"}'
    hang: bool = False
    crash: bool = False


class _Answer(Resource):
    isLeaf = True

    def __init__(self, server: AuthServer) -> None:
        super().__init__()
        self._server = server

    def render(self, request: Request) -> Any:
        reply = self._server.reply
        self._server.seen.append(
            Seen(
                request.method,
                request.uri,
                {k.lower(): v[0] for k, v in request.requestHeaders.getAllRawHeaders()},
                request.content.read(),
            )
        )
        if self._server.drop > 0:
            self._server.drop -= 1
            request.transport.abortConnection()
            return NOT_DONE_YET
        if reply.crash:
            raise RuntimeError("the handler crashed")
        if reply.hang:
            self._server.hanging.append(request)
            return NOT_DONE_YET
        request.setResponseCode(reply.status)
        for name, content in reply.headers.items():
            request.setHeader(name, content)
        return reply.body


class AuthServer:
    """``start(tls=...)`` listens on 127.0.0.1 (a free port the first time, the same port after);
    ``url(path)`` is where it listens."""

    def __init__(self, reactor: Any = default_reactor) -> None:
        self.reply = Reply()
        self.seen: list[Seen] = []
        self.hanging: list[HttpRequest] = []
        self.drop = 0  # how many of the next requests get their connection dropped, no answer
        self._sites: list[WrappingFactory] = []
        self.port_number = 0
        self._reactor = reactor
        self._port: Any = None
        self._tls: Any = None
        self._scheme = "http"

    def start(self, tls: Any = None) -> None:
        site = WrappingFactory(Site(_Answer(self)))  # keeps its connections, for stop()
        self._sites.append(site)
        self._tls = tls if tls is not None else self._tls
        if self._tls is None:
            self._port = self._reactor.listenTCP(self.port_number, site, interface="127.0.0.1")
        else:
            self._scheme = "https"
            self._port = self._reactor.listenSSL(self.port_number, site, self._tls, interface="127.0.0.1")
        self.port_number = self._port.getHost().port

    @property
    def connections(self) -> list[ProtocolWrapper]:
        """The connections open now."""
        return [protocol for site in self._sites for protocol in site.protocols]

    def url(self, path: str = "/auth", host: str = "127.0.0.1") -> str:
        return f"{self._scheme}://{host}:{self.port_number}{path}"

    def stop(self) -> Deferred[Any]:
        """Stop listening and drop every connection, kept-alive ones and hanging requests too."""
        waits: list[Deferred[Any]] = []
        if self._port is not None:
            waits.append(maybeDeferred(self._port.stopListening))
            self._port = None
        for protocol in self.connections:
            protocol.transport.abortConnection()
        self.hanging.clear()
        return gatherResults(waits)
