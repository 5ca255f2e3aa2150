"""``ocppgw.ws.transport``: peer addresses, and the Twisted internals the send timeout reads."""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.ws.transport import FILE_DESCRIPTOR_INTERNALS, buffered, peer_address, socket_transport, write_now


class _Socket(FileDescriptor):
    def __init__(self) -> None:
        super().__init__(reactor=Clock())
        self.connected = 1

    def startWriting(self) -> None:
        pass


class _Wrapper:
    def __init__(self, transport: object) -> None:
        self.transport = transport


class PeerAddressTests(SynchronousTestCase):
    def test_ipv4_ipv6_and_other(self) -> None:
        """IPv4 as host:port, IPv6 in brackets, an address without host as its text, errors as unknown."""
        ipv4 = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 5))
        self.assertEqual(peer_address(ipv4), "10.0.0.1:5")
        self.assertEqual(peer_address(StringTransport(peerAddress=IPv6Address("TCP", "::1", 7))), "[::1]:7")
        unix = UNIXAddress(b"/tmp/s")
        self.assertEqual(peer_address(StringTransport(peerAddress=unix)), str(unix))
        self.assertEqual(peer_address(object()), "unknown")


class FileDescriptorInternalsTests(SynchronousTestCase):
    """The one reach into Twisted internals: fails naming the attribute if a Twisted release drops it."""

    def test_internals_present(self) -> None:
        """A FileDescriptor still has every attribute ``buffered`` reads."""
        sock = _Socket()
        missing = [name for name in FILE_DESCRIPTOR_INTERNALS if not hasattr(sock, name)]
        self.assertEqual(
            missing, [], f"twisted.internet.abstract.FileDescriptor no longer has {missing}: update "
            "ocppgw/ws/transport.py:buffered"
        )

    def test_buffered_counts_unsent_bytes(self) -> None:
        """Bytes written and not yet taken by the kernel are counted, in both of Twisted's buffers."""
        sock = _Socket()
        self.assertEqual(buffered(sock), 0)
        sock.write(b"abc")
        sock.write(b"de")
        self.assertEqual(buffered(sock), 5)

    def test_socket_transport_found_under_wrappers(self) -> None:
        """The socket-level transport is found under wrapping transports, None when there is none."""
        sock = _Socket()
        self.assertIs(socket_transport(_Wrapper(_Wrapper(sock))), sock)
        self.assertIsNone(socket_transport(_Wrapper(None)))


class WriteNowTests(SynchronousTestCase):
    """``write_now`` writes nothing unless it can keep the order; real sockets:
    tests/integration/test_ws_write_now.py."""

    def test_nothing_written_to_other_transports(self) -> None:
        """A transport that is not a TCP connection (a test's, a wrapper) gets nothing."""
        self.assertEqual(write_now(_Socket(), b"abc"), 0)
        self.assertEqual(write_now(StringTransport(), b"abc"), 0)

    def test_tcp_connection_sends_with_write_some_data(self) -> None:
        """Twisted's TCP connection still sends through ``writeSomeData`` (``doWrite`` does)."""
        from twisted.internet.tcp import Connection

        self.assertIn("writeSomeData", Connection.__dict__)
