"""paho-mqtt driven by the reactor: no network thread, no hand-off per batch.

paho's documented external-loop API does the MQTT work: the reactor watches
paho's socket (``addReader``; ``addWriter`` while paho has bytes to send, as
paho's ``on_socket_register_write`` / ``on_socket_unregister_write`` say) and
calls ``loop_read`` / ``loop_write``; ``loop_misc`` (keepalive pings, a broker
that stopped answering) runs on a ``LoopingCall``.  paho's callbacks therefore
run in the reactor thread, inside those calls, and queue their events without a
hand-off; the queue is drained as soon as paho returns, so the base class's
ordering rules hold unchanged.

The client is ``ocppgw.mqtt.paho_client.BufferingClient``: paho with a
buffered socket (one large ``recv`` serves many packets, one ``send`` per paho
step) and a short path for the packets every charge point call brings, which
reports them through its raw hooks: a message by topic bytes is handled at once
when no earlier event waits, an acknowledgement (it only lowers a count) when
no stop or refusal report waits on it.  If a paho release renames what the
short path relies on, the link still works with paho's own reads and writes,
and ``tests`` notice.

Delayed ACKs: a broker that leaves Nagle's algorithm on (Mosquitto's ``set_tcp_nodelay false``,
its default) holds each small packet until the previous one is acknowledged, and Linux acknowledges
a segment it has nothing to answer with up to 40 ms late: every round trip through the gateway then
takes ~45 ms. With ``[mqtt] quickack`` (default on) the link sets ``TCP_QUICKACK`` after each read
of the broker socket (Linux leaves quick-ACK mode by itself, so it is armed again every time).

Only the connect is blocking in paho (name lookup, TCP connect, TLS handshake,
each bounded by paho's connect timeout), so ``reconnect`` runs in the reactor's
thread pool; the reactor does not touch the client until it returns.  Back-off
between attempts follows paho's own (Twisted's ``backoffPolicy`` without
jitter): ``reconnect_delay_min``, doubled after each failed attempt up to
``reconnect_delay_max``, reset by a successful CONNACK.
"""

from __future__ import annotations

import socket
from typing import Any

import zope.interface
from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure

from ocppgw.mqtt.events import ACK, MESSAGE, Event, EventQueue
from ocppgw.mqtt.link import PahoLink
from ocppgw.mqtt.paho_client import BufferedSocket, buffering_client

_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def quickack(sock: Any) -> bool:
    """Ask the kernel to acknowledge what arrives on ``sock`` at once (until it leaves quick-ACK
    mode by itself); False where there is no such option or the socket refuses it."""
    if _TCP_QUICKACK is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
    except (OSError, AttributeError):
        return False
    return True


class _DrivenQueue(EventQueue):
    """Events posted while the reactor thread is inside paho (``driving``) wait for the drain that
    follows paho's return, with no hand-off."""

    driving = False

    def post(self, event: Event) -> None:
        if self.driving:
            self.events.append(event)
        else:
            super().post(event)  # the pool thread, while connecting


@zope.interface.implementer(IReadDescriptor, IWriteDescriptor)
class _BrokerSocket:
    """paho's socket as the reactor sees it; every event goes back to the link with the socket."""

    def __init__(self, link: PahoReactorLink, sock: Any) -> None:
        self._link = link
        self.sock = sock

    def fileno(self) -> int:
        return int(self.sock.fileno())

    def doRead(self) -> None:
        self._link._readable(self.sock)

    def doWrite(self) -> None:
        self._link._writable(self.sock)

    def connectionLost(self, reason: Failure) -> None:
        """Only the reactor's own shutdown gets here (the link never lets doRead/doWrite raise)."""

    def logPrefix(self) -> str:
        return "mqtt"


class PahoReactorLink(PahoLink):
    """``IBrokerLink`` whose paho client is driven by the reactor's own I/O loop."""

    _event_queue = _DrivenQueue
    _queue: _DrivenQueue

    max_reads = 16
    """Chunks (``BufferedSocket.read_size`` each) read from the broker per readable event at most,
    so that a flood from the broker leaves the charge points their turn."""

    misc_interval = 1.0
    """Seconds between ``loop_misc`` calls, as paho's own loop does (its select timeout)."""

    disconnect_timeout = 5.0
    """How long ``stop`` waits for paho to write DISCONNECT and close before closing the socket itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("client_factory", buffering_client)
        super().__init__(*args, **kwargs)
        self._socket: _BrokerSocket | None = None  # registered with the reactor
        self._connecting = False  # reconnect() is running in the thread pool
        self._retry_call: Any = None
        self._retry_policy = backoffPolicy(
            self._config.reconnect_delay_min, self._config.reconnect_delay_max, factor=2.0, jitter=lambda: 0.0
        )
        self._retries = 0  # connect attempts since the last CONNACK
        self._misc: LoopingCall | None = None
        self._closed: Deferred[None] | None = None  # fired when stopping and paho's socket is gone
        self._close_call: Any = None
        self._flush_later: Any = None  # a flush of what the short path buffered, due this reactor turn
        self._quickack = self._config.quickack and _TCP_QUICKACK is not None

    # -- starting and stopping ---------------------------------------------------

    def _start_network(self, client: Any) -> None:
        config = self._config
        client.on_socket_close = self._paho_socket_close
        client.on_socket_register_write = self._paho_register_write
        client.on_socket_unregister_write = self._paho_unregister_write
        client.on_raw_message = self._paho_raw_message  # BufferingClient's short path
        client.on_raw_ack = self._paho_raw_ack
        client.on_raw_write = self._flush_soon
        client.connect_async(config.host, config.port, config.keepalive)  # remembers, does not connect
        self._misc = LoopingCall(self._misc_step)
        self._misc.clock = self._reactor
        self._misc.start(self.misc_interval, now=False)
        self._connect()

    def _stop_network(self, client: Any) -> Deferred[None]:
        self._closed = closed = Deferred()
        if self._retry_call is not None:
            self._retry_call.cancel()
            self._retry_call = None
        if self._socket is not None:
            client.disconnect()  # written by the next doWrite; paho closes the socket after it
        if self._socket is None and not self._connecting:
            self._network_closed()
        else:
            self._close_call = self._reactor.callLater(self.disconnect_timeout, self._force_close)
        return closed

    def _force_close(self) -> None:
        """DISCONNECT could not be written in time (a broker that reads nothing): drop the socket."""
        self._close_call = None
        registered = self._unregister()
        if registered is not None:
            self._log.warn("MQTT broker did not take DISCONNECT in time; closing the connection")
            registered.sock.close()
        self._network_closed()

    def _network_closed(self) -> None:
        if self._close_call is not None:
            self._close_call.cancel()
            self._close_call = None
        if self._misc is not None and self._misc.running:
            self._misc.stop()
        closed, self._closed = self._closed, None
        if closed is not None:
            # out of paho's call stack: the stop continues once paho has returned
            self._reactor.callLater(0, closed.callback, None)

    def _active(self) -> bool:
        return self._state in ("started", "stopping")

    # -- connecting --------------------------------------------------------------

    def _connect(self) -> None:
        self._retry_call = None
        if not self._active():
            return
        self._connecting = True
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._client.reconnect)
        d.addCallbacks(self._connected_socket, self._connect_failed)
        d.addErrback(lambda f: self._log.failure("handling an MQTT connect attempt failed", f))

    def _connected_socket(self, _rc: object) -> None:
        self._connecting = False
        client = self._client
        sock = client.socket()
        if sock is None:
            self._connect_failed(None)
            return
        self._socket = _BrokerSocket(self, sock)
        if self._quickack:
            self._quickack = quickack(sock)
        self._reactor.addReader(self._socket)
        if client.want_write():  # CONNECT, queued in the pool thread
            self._reactor.addWriter(self._socket)
        if not self._active():  # stop() came while connecting: say goodbye properly
            client.disconnect()

    def _connect_failed(self, failure: Failure | None) -> None:
        self._connecting = False
        if not self._active():
            self._network_closed()
            return
        self._on_connect_fail("no socket" if failure is None else failure.getErrorMessage())
        self._schedule_connect()

    def _schedule_connect(self) -> None:
        delay = self._retry_policy(self._retries)
        self._retries += 1
        self._retry_call = self._reactor.callLater(delay, self._connect)

    def _on_connect(self, failed: bool, reason: str) -> None:
        if not failed:
            self._retries = 0
        super()._on_connect(failed, reason)

    # -- the short path's hooks (reactor thread, inside paho) -----------------------

    def _paho_raw_message(self, topic: bytes, payload: bytes) -> None:
        try:
            text: str | None = topic.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        queue = self._queue
        if queue.driving and not queue.events:
            # inside paho, nothing earlier waiting: handled now, in order
            try:
                self._subscriptions.dispatch(text, payload)
            except Exception:
                self._log.failure("handling MQTT event {event!r} failed", event=MESSAGE)
        else:
            queue.post((MESSAGE, text, payload))

    def _paho_raw_ack(self, mid: int) -> None:
        outbox = self._outbox
        if self._queue.driving and self._state == "started" and not outbox.refused and not outbox.awaited:
            # inside paho, and no stop, refusal report or room observer waits for the count to drop
            outbox.unacked.discard(mid)
        else:
            self._queue.post((ACK, mid))

    # -- paho's socket callbacks (reactor thread, or the pool thread while connecting) ----

    def _paho_register_write(self, client: Any, userdata: Any, sock: Any) -> None:
        registered = self._socket
        if registered is not None and registered.sock is sock:
            self._reactor.addWriter(registered)
        # while connecting there is nothing registered yet: _connected_socket asks want_write()

    def _paho_unregister_write(self, client: Any, userdata: Any, sock: Any) -> None:
        registered = self._socket
        if registered is not None and registered.sock is sock and not getattr(sock, "has_output", False):
            self._reactor.removeWriter(registered)

    def _paho_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        """paho is about to close its socket: forget it before its descriptor number is reused."""
        registered = self._socket
        if registered is None or registered.sock is not sock:
            return
        self._unregister()
        if self._active():
            self._schedule_connect()
        else:
            self._network_closed()

    def _unregister(self) -> _BrokerSocket | None:
        if self._flush_later is not None:
            self._flush_later.cancel()
            self._flush_later = None
        registered, self._socket = self._socket, None
        if registered is not None:
            self._reactor.removeReader(registered)
            self._reactor.removeWriter(registered)
        return registered

    # -- driving paho ----------------------------------------------------------------

    def _drive(self, step: Any) -> None:
        """Run one paho step; what its callbacks posted is handled right after it returns."""
        queue = self._queue
        queue.driving = True
        try:
            step()
        except Exception:
            self._log.failure("paho failed in {step}", step=getattr(step, "__name__", step))
        finally:
            queue.driving = False
        if queue.events:
            queue.drain()

    def _readable(self, sock: Any) -> None:
        """Read until the socket would block (at most ``max_reads`` chunks a turn), sending the
        acknowledgements of each chunk before reading the next: under a flood of commands the
        broker's window for this session (Mosquitto: 20 in flight) reopens at once, and its queue
        for the gateway (shared by every charge point) drains as fast as the gateway can take it."""
        client = self._client
        for _ in range(self.max_reads):
            if client.socket() is not sock:
                return
            self._drive(client.loop_read)
            # Bytes TLS has already decrypted sit in the SSL object, where epoll cannot see them.
            pending = getattr(sock, "pending", None)
            while pending is not None and client.socket() is sock and pending() > 0:
                self._drive(client.loop_read)
            if not isinstance(sock, BufferedSocket) or sock.would_block or client.socket() is not sock:
                break
            if sock.has_output:
                self._flush_socket(sock)
        if self._quickack and client.socket() is sock:
            quickack(sock)

    def _writable(self, sock: Any) -> None:
        client = self._client
        if client.socket() is not sock:
            return
        if isinstance(sock, BufferedSocket) and not self._flush_socket(sock):
            return  # the kernel still holds back what an earlier step wrote
        self._drive(client.loop_write)
        if isinstance(sock, BufferedSocket) and client.socket() is sock:
            self._flush_socket(sock)

    def _flush_socket(self, sock: BufferedSocket) -> bool:
        registered = self._socket
        done = sock.flush()
        if sock.error is not None:
            self._drive(self._client.loop_read)  # paho reads the error, closes the socket and reconnects
            return True
        if registered is not None and registered.sock is sock:
            if done and not self._client.want_write():
                self._reactor.removeWriter(registered)
            elif not done:
                self._reactor.addWriter(registered)
        return done

    def _flush_soon(self) -> None:
        """The short path put a packet in the buffered socket (no writer registered for it): write
        whatever is buffered once the events of this reactor turn are handled, in one send."""
        if self._flush_later is None:
            self._flush_later = self._reactor.callLater(0, self._flush_buffered)

    def _flush_buffered(self) -> None:
        self._flush_later = None
        registered = self._socket
        if registered is not None and isinstance(registered.sock, BufferedSocket):
            self._flush_socket(registered.sock)

    def _misc_step(self) -> None:
        if not self._connecting and self._socket is not None:
            self._drive(self._client.loop_misc)
