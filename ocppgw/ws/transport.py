"""What the listeners need to know of a Twisted transport: the peer's address and the unsent bytes.

``buffered`` is the one place that reads Twisted internals: ``FileDescriptor`` has no public way to
ask how many written bytes the kernel has not taken yet, and the send timeout needs exactly that.
It reads ``dataBuffer``, ``offset`` and ``_tempDataLen`` (Twisted 24 to 26); the test
``tests/test_ws_transport.py`` fails with a message naming them if a Twisted release changes them.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import FileDescriptor

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
