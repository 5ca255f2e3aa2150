"""Per-listener connection limits and TCP options, as a wrapping factory around the WebSocket factory.

- ``max_connections``: live TCP connections of the listener; one more is refused at once.
- ``max_conn_rate``: a token bucket (capacity: one second's worth); an arrival finding it empty is
  refused at once. Nothing waits: charge points reconnect with back-off, and a wait queue under a
  flood would only grow memory.
- A refused connection is closed in ``makeConnection``, before a byte of it is read; it is counted
  (``connections_refused``) at once and logged in a summary a timer flushes: the first refusal after a
  quiet second is logged at the end of the reactor iteration that accepted it (so a burst accepted
  together is one line), later ones at most once a second per listener, each line with the true
  count by reason.
- ``nodelay``, ``recbuf``, ``sndbuf``: set on each accepted socket.
- ``send_timeout`` / ``send_timeout_close``: a connection whose Twisted write buffer stays non-empty
  without draining for ``send_timeout`` is a peer that does not read; it is aborted (or, with
  ``send_timeout_close = false``, logged). Twisted never blocks on a write; the check runs only
  over connections written to since their buffer was last empty, so idle ones cost nothing. A write
  goes straight to the kernel when nothing is buffered (``transport.write_now``); only what it does
  not take is buffered by Twisted and watched.
  The WebSocket above learns why its socket was aborted from ``abort_reason``, so the log line,
  the ``disconnects`` metric and the presence say the gateway closed it, not the charge point.
"""

from __future__ import annotations

import socket
from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet.interfaces import IDelayedCall, IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ocppgw.config import ListenerSection
from ocppgw.core.timers import cancel
from ocppgw.metrics import Metrics
from ocppgw.ws.transport import buffered, peer_address, socket_transport, write_now

_log = Logger()

REFUSAL_REASONS = ("max_connections", "max_conn_rate")

# socket transport -> (cause, reason) of the limits layer aborting it; read by the WebSocket above.
_aborted: WeakKeyDictionary[Any, tuple[str, str]] = WeakKeyDictionary()


def abort_reason(transport: Any) -> tuple[str, str] | None:
    """``(cause, reason)`` when the limits layer aborted the socket under ``transport``, else None."""
    below = socket_transport(transport)
    return None if below is None else _aborted.get(below)


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity``; ``clock`` provides ``seconds()``."""

    def __init__(self, rate: float, capacity: float, clock: Any) -> None:
        self.rate = rate
        self.capacity = capacity
        self.clock = clock
        self.tokens = capacity
        self._stamp = clock.seconds()

    def take(self) -> bool:
        """Whether a token was there (and is now taken)."""
        now = self.clock.seconds()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _Refused(Protocol):
    """Closes the connection as soon as it is made: nothing is read or written."""

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        transport.abortConnection()


@implementer(IHandshakeListener)
class LimitedProtocol(ProtocolWrapper):
    """One connection of a ``ListenerLimits``: TCP options, counted, its write buffer watched."""

    factory: ListenerLimits

    def __init__(self, factory: ListenerLimits, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self.written = 0
        self.stalled_since: float | None = None
        self._progress = (0, 0)  # (buffered, written - buffered) when last checked
        self._reported = False

    def makeConnection(self, transport: Any) -> None:
        self.factory.apply_socket_options(transport)
        super().makeConnection(transport)

    def write(self, data: bytes) -> None:
        """Straight to the kernel when nothing waits (no epoll registration); the rest, buffered by
        Twisted, is watched for the send timeout."""
        self.written += len(data)
        sent = write_now(self.transport, data)
        if sent < len(data):
            self.factory.watch(self)
            super().write(data[sent:] if sent else data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def handshakeCompleted(self) -> None:
        """Passed on when this wrapper sits under a TLS layer."""
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason: Failure) -> None:
        self.factory.forget(self)
        super().connectionLost(reason)

    def check_send(self, now: float) -> bool:
        """Whether the write buffer still holds data; aborts a peer stalled for ``send_timeout``."""
        below = socket_transport(self.transport)
        if below is None or below.disconnected:
            return False
        pending = buffered(below)
        if pending == 0:
            self.stalled_since = None
            self._reported = False
            return False
        sent = self.written - pending
        last_pending, last_sent = self._progress
        self._progress = (pending, sent)
        if self.stalled_since is None or pending < last_pending or sent > last_sent:
            self.stalled_since = now
            return True
        listener = self.factory.listener
        if now - self.stalled_since < listener.send_timeout:
            return True
        name = listener.label
        close = listener.send_timeout_close
        if close or not self._reported:
            self._reported = True
            self.factory.metrics.inc("send_timeouts", listener=name)
            _log.warn(
                "listener {listener}: peer {peer} has not read for {seconds:g}s ({pending} bytes "
                "waiting){outcome}",
                listener=name,
                peer=peer_address(below),
                seconds=listener.send_timeout,
                pending=pending,
                outcome=": closing" if close else "; send_timeout_close is off",
            )
        if close:
            _aborted[below] = ("send_timeout", f"peer has not read for {listener.send_timeout:g}s")
            below.abortConnection()
            return False
        return True


class ListenerLimits(WrappingFactory):
    """Wraps one listener's factory: connection count, arrival rate, TCP options, send timeout.

    ``clock`` is the reactor (``seconds``, ``callLater``); tests pass ``task.Clock``.
    """

    protocol = LimitedProtocol

    def __init__(self, wrappedFactory: Any, listener: ListenerSection, clock: Any, metrics: Metrics) -> None:
        super().__init__(wrappedFactory)
        self.listener = listener
        self.clock = clock
        self.metrics = metrics
        self.bucket = (
            TokenBucket(listener.max_conn_rate, max(1.0, listener.max_conn_rate), clock)
            if listener.max_conn_rate is not None
            else None
        )
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)
        self._unlogged = dict.fromkeys(REFUSAL_REASONS, 0)  # refusals not yet in a log line
        self._last_log = -1e18
        self._log_timer: IDelayedCall | None = None
        self._watched: set[LimitedProtocol] = set()
        self._checker: LoopingCall | None = None
        self.check_interval = max(0.05, min(1.0, listener.send_timeout / 4))

    @property
    def live(self) -> int:
        """Live TCP connections of this listener."""
        return len(self.protocols)

    def buildProtocol(self, addr: Any) -> Any:
        listener = self.listener
        reason = None
        if listener.max_connections is not None and len(self.protocols) >= listener.max_connections:
            reason = "max_connections"
        elif self.bucket is not None and not self.bucket.take():
            reason = "max_conn_rate"
        if reason is None:
            return super().buildProtocol(addr)
        self.refused[reason] += 1
        self.metrics.inc("connections_refused", listener=listener.label, reason=reason)
        self._unlogged[reason] += 1
        if self._log_timer is None:
            delay = max(0.0, self._last_log + 1.0 - self.clock.seconds())
            self._log_timer = self.clock.callLater(delay, self.log_refusals)
        return _Refused()

    def log_refusals(self) -> None:
        """One line for the refusals since the last one: their count, by reason."""
        cancel(self._log_timer)
        self._log_timer = None
        count = sum(self._unlogged.values())
        if not count:
            return
        listener = self.listener
        _log.warn(
            "listener {listener}: refused {count} connection(s) ({reasons}; {live} live, "
            "max_connections {max_connections}, max_conn_rate {max_conn_rate}/s)",
            listener=listener.label,
            count=count,
            reasons=", ".join(f"{reason} {n}" for reason, n in self._unlogged.items() if n),
            refused=dict(self._unlogged),
            live=len(self.protocols),
            max_connections=listener.max_connections or "infinity",
            max_conn_rate=listener.max_conn_rate or "infinity",
        )
        self._unlogged = dict.fromkeys(REFUSAL_REASONS, 0)
        self._last_log = self.clock.seconds()

    def apply_socket_options(self, transport: Any) -> None:
        below = socket_transport(transport)
        if below is None:
            return
        listener = self.listener
        try:
            sock = below.getHandle()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(listener.nodelay))
            if listener.recbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, listener.recbuf)
            if listener.sndbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, listener.sndbuf)
        except (OSError, AttributeError) as e:
            _log.debug("socket options not set: {error}", error=e)

    # -- send timeout ------------------------------------------------------

    def watch(self, protocol: LimitedProtocol) -> None:
        """``protocol`` has written: check its buffer until it is empty again."""
        if protocol in self._watched:
            return
        self._watched.add(protocol)
        if self._checker is None:
            self._checker = LoopingCall(self.check_send)
            self._checker.clock = self.clock
            self._checker.start(self.check_interval, now=False)

    def forget(self, protocol: LimitedProtocol) -> None:
        """``protocol``'s connection is gone; the checks stop with the last watched one."""
        self._watched.discard(protocol)
        if not self._watched:
            self._stop_checker()

    def check_send(self) -> None:
        now = self.clock.seconds()
        for protocol in list(self._watched):
            if not protocol.check_send(now):
                self._watched.discard(protocol)
        if not self._watched:
            self._stop_checker()

    def _stop_checker(self) -> None:
        if self._checker is not None:
            checker, self._checker = self._checker, None
            checker.stop()

    def stop(self) -> None:
        """Log the refusals not yet logged and stop the send-timeout checks (the service is stopping)."""
        self.log_refusals()
        self._watched.clear()
        self._stop_checker()
