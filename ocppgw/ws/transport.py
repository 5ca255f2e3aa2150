"""What the listeners need of a Twisted transport: the peer's address, the unsent bytes, a write now.

``buffered`` is the one place that reads Twisted internals: ``FileDescriptor`` has no public way to
ask how many written bytes the kernel has not taken yet, and the send timeout needs exactly that.
It reads ``dataBuffer``, ``offset`` and ``_tempDataLen`` (Twisted 24 to 26); the test
``tests/test_ws_transport.py`` fails with a message naming them if a Twisted release changes them.

``write_now`` hands bytes to the kernel in the call when Twisted holds none for the socket: Twisted's
``write`` always buffers and registers the socket for writing, sends on the next reactor turn and
unregisters it, two ``epoll_ctl`` calls for every small frame (a ping, a reply) that the kernel would
have taken at once. It uses ``tcp.Connection.writeSomeData``, the method ``doWrite`` sends with.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.tcp import Connection

FILE_DESCRIPTOR_INTERNALS = ("dataBuffer", "offset", "_tempDataLen")


def peer_address(transport: Any) -> str:
    """``host:port`` of the peer, ``[host]:port`` for IPv6, ``unknown`` when the transport cannot say."""
    try:
        peer = transport.getPeer()
    except Exception:
        return "unknown"
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    if host is None:
        return str(peer)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def socket_transport(transport: Any) -> FileDescriptor | None:
    """The socket-level transport under ``transport`` (through TLS and other wrappers), if any."""
    for _ in range(8):
        if transport is None:
            return None
        if isinstance(transport, FileDescriptor):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def buffered(transport: FileDescriptor) -> int:
    """Bytes Twisted holds for ``transport`` that the kernel has not taken yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def write_now(transport: Any, data: bytes) -> int:
    """Bytes of ``data`` the kernel took at once; 0 (nothing written) unless ``transport`` is a
    connected TCP socket with nothing buffered by Twisted, so that order is kept. What is not
    taken goes through ``transport.write`` as usual (the caller's job); a failed send is left to
    Twisted's own write, which meets the same error and loses the connection its usual way."""
    if (
        not isinstance(transport, Connection)
        or not transport.connected
        or transport.disconnecting
        or buffered(transport)
    ):
        return 0
    sent = transport.writeSomeData(data)
    return sent if isinstance(sent, int) else 0
