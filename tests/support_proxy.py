"""A TCP proxy a test puts in front of a real server and then closes and reopens: a database that
goes away (every connection dropped, new ones refused) and comes back, without touching the server
the whole machine shares."""

from __future__ import annotations

from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred


class _Pipe(protocol.Protocol):
    """One side of a proxied connection: what arrives goes to ``peer``."""

    peer: _Pipe | None = None

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.pending: list[bytes] = []

    def connectionMade(self) -> None:
        self.proxy.pipes.add(self)
        if self.peer is not None:  # the server's side is up: what the client sent meanwhile goes first
            for data in self.peer.pending:
                self.transport.write(data)
            self.peer.pending.clear()

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.proxy.pipes.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class _Server(_Pipe):
    """The client's side: connects to the real server and forwards once that side is up."""

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.proxy.stalled:
            self.transport.pauseProducing()
            return
        client = _Pipe(self.proxy)
        client.peer, self.peer = self, client
        factory = protocol.ClientFactory.forProtocol(lambda: client)
        factory.clientConnectionFailed = lambda connector, reason: self.transport.loseConnection()
        reactor.connectTCP("127.0.0.1", self.proxy.target_port, factory, timeout=5)


class TcpProxy:
    """Listens on 127.0.0.1 (a free port, kept across ``close``/``open``) and forwards to
    ``target_port``. ``close`` aborts every connection and stops listening (refused); ``stall``
    accepts new connections but never answers (a server that hangs)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.pipes: set[_Pipe] = set()
        self.stalled = False
        self._listening: Any = None

    def open(self) -> None:
        factory = protocol.Factory.forProtocol(lambda: _Server(self))
        self._listening = reactor.listenTCP(self.port, factory, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        self.stalled = False

    def stall(self) -> None:
        self.stalled = True
        for pipe in list(self.pipes):
            pipe.transport.pauseProducing()

    def close(self) -> Deferred[None]:
        listening, self._listening = self._listening, None
        for pipe in list(self.pipes):
            pipe.transport.abortConnection()
        return (
            maybeDeferred(listening.stopListening) if listening is not None else maybeDeferred(lambda: None)
        )


@inlineCallbacks
def assert_unavailable_in_time(testcase: Any, backend: Any, credentials: Any, bound: float) -> Any:
    """``backend`` (its server just made unreachable or silent) answers UNAVAILABLE within ``bound``
    seconds of reactor time."""
    from ocppgw.core.ports import Outcome

    began = reactor.seconds()
    decision = yield backend.authenticate(credentials)
    testcase.assertEqual(decision.outcome, Outcome.UNAVAILABLE, decision)
    testcase.assertLess(reactor.seconds() - began, bound)
