"""The master's listening sockets: per listener, one socket per worker, all bound to the same
address with ``SO_REUSEPORT`` so the kernel spreads new connections over them.

The master keeps every socket open while workers come and go: connections that arrive for a worker
being restarted wait in its socket's backlog until the new one adopts it.
"""

from __future__ import annotations

import socket

from twisted.internet.error import CannotListenError

from ocppgw.config import ListenerSection
from ocppgw.ws.service import cannot_listen, listener_family


def reuseport_group(listener: ListenerSection, count: int, source: str) -> list[socket.socket] | str:
    """``count`` listening sockets on ``listener``'s bind, or the problem line when it cannot be had.

    A plain socket (``SO_REUSEADDR`` only, as Twisted binds) is bound first and closed, so a port held
    by another process, even one with ``SO_REUSEPORT`` (another gateway), stops start-up as it does
    with one process; port 0 picks one port for the whole group."""
    family = listener_family(listener.host)
    port = listener.port
    sockets: list[socket.socket] = []
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((listener.host, port))
            port = probe.getsockname()[1]
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((listener.host, port))
            sock.listen(listener.backlog)
            sock.setblocking(False)
            sock.set_inheritable(True)
    except OSError as e:
        for sock in sockets:
            sock.close()
        error = CannotListenError(listener.host, listener.port, e)
        return cannot_listen(source, listener.section, listener.host, listener.port, error)
    return sockets
