"""max_inflight_bytes with real sockets: the frame that would pass the gateway-wide budget is closed."""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.integration.harness import UPGRADE, GatewayHarness
from tests.support import poll_until

FRAME = 700 * 1024


def _masked_header(length: int) -> tuple[bytes, bytes]:
    """A masked text frame header (FIN set) declaring ``length`` bytes, and its mask."""
    mask = os.urandom(4)
    return b"\x81\xff" + struct.pack("!Q", length) + mask, mask


def _mask(data: bytes, mask: bytes, offset: int) -> bytes:
    key = (mask * (len(data) // 4 + 2))[offset % 4 : offset % 4 + len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(len(data), "big")


def _read_some(sock: socket.socket, into: bytearray) -> int:
    """Append what ``sock`` (non-blocking) has to ``into``; its length (the reactor must not block)."""
    try:
        into += sock.recv(65536)
    except BlockingIOError:
        pass
    return len(into)


def _datatransfer(unique_id: str, size: int) -> bytes:
    """An OCPP-J DataTransfer Call of exactly ``size`` bytes."""
    head = json.dumps([2, unique_id, "DataTransfer", {"vendorId": "v", "data": ""}]).encode()
    return head[:-3] + b"x" * (size - len(head)) + head[-3:]


class InflightBudgetTests(TestCase):
    extra_config = "[gateway]\nmax_inflight_bytes = 1MB\nmax_frame_size = 1MB\n"

    @inlineCallbacks
    def setUp(self) -> Any:
        self.gw = GatewayHarness(self, self.extra_config)
        self.sockets: list[socket.socket] = []
        self.addCleanup(lambda: [s.close() for s in self.sockets])
        yield self.gw.start()

    @inlineCallbacks
    def open(self, cid: str) -> Any:
        """A raw WebSocket to the gateway, open once the gateway has its session."""
        sock = socket.create_connection(("127.0.0.1", self.gw.port), timeout=10)
        self.sockets.append(sock)
        sock.sendall(UPGRADE.format(cid=cid).encode())
        yield poll_until(lambda: self.gw.service.router.session(cid) is not None, timeout=10)
        sock.setblocking(False)
        response = bytearray()
        yield poll_until(lambda: _read_some(sock, response) and b"\r\n\r\n" in response, timeout=10)
        self.assertIn(b" 101 ", response.split(b"\r\n", 1)[0])
        sock.setblocking(True)
        return sock

    @inlineCallbacks
    def test_second_large_frame_closed_first_completes(self) -> Any:
        """With a 1 MB budget, A starts a 700 KB frame, then B starts one: B is closed with 1009 and
        counted, A's frame completes and is published; the count falls back to 0."""
        first = yield self.open("CPA")
        second = yield self.open("CPB")
        service = self.gw.service
        payload = _datatransfer("big1", FRAME)
        header, mask = _masked_header(FRAME)
        first.sendall(header + _mask(payload[:1000], mask, 0))
        yield poll_until(lambda: service.inflight.used >= FRAME, timeout=10)

        other, other_mask = _masked_header(FRAME)
        second.sendall(other + _mask(b" " * 1000, other_mask, 0))
        second.setblocking(False)
        closing = bytearray()
        yield poll_until(lambda: _read_some(second, closing) >= 4, timeout=10)
        self.assertEqual(closing[0], 0x88, closing)  # a close frame...
        self.assertEqual(struct.unpack("!H", closing[2:4])[0], 1009)  # ...with 1009
        self.assertEqual(service.metrics.value("inflight_refused", listener="ws.default"), 1)
        self.assertEqual(service.inflight.used, FRAME)
        second.close()
        yield poll_until(lambda: service.router.session("CPB") is None, timeout=10)

        first.sendall(_mask(payload[1000:], mask, 1000))
        (message,) = yield self.gw.wait_messages("ocpp/cp/CPA", 1, timeout=10)
        self.assertEqual(message["UniqueId"], "big1")
        self.assertEqual(message["Payload"]["data"], "x" * len(message["Payload"]["data"]))
        self.assertGreater(len(message["Payload"]["data"]), FRAME - 100)
        yield poll_until(lambda: service.inflight.used == 0, timeout=10)
        self.assertEqual(service.metrics.value("inflight_bytes"), 0)
        first.close()
        yield poll_until(lambda: service.router.session("CPA") is None, timeout=10)

    @inlineCallbacks
    def test_count_falls_when_a_sender_leaves(self) -> Any:
        """A connection that leaves in the middle of its frame gives its bytes back."""
        sock = yield self.open("CPC")
        header, mask = _masked_header(FRAME)
        sock.sendall(header + _mask(b"[" * 1000, mask, 0))
        service = self.gw.service
        yield poll_until(lambda: service.inflight.used == FRAME, timeout=10)
        self.assertEqual(service.metrics.value("inflight_bytes"), FRAME)
        sock.close()
        yield poll_until(lambda: service.inflight.used == 0, timeout=10)
