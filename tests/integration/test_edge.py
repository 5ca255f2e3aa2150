"""The public edge before and around the 101, through real sockets: the request's byte budget, no
banner, one WebSocket version, charge points offering no subprotocol, the charge point's address
behind an HTTP reverse proxy (a real HAProxy) and permessage-deflate with a deflate bomb.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from websockets.exceptions import InvalidStatus

from tests.integration.harness import UPGRADE, ChargePoint, Client, GatewayHarness
from tests.integration.test_proxy_protocol import CLIENT_HOST, HAProxy, _connect_from, _recv_until_closed
from tests.integration.test_wss import RecordingAuthenticator


def _raw(port: int, request: bytes, host: str = "127.0.0.1") -> bytes:
    """Send ``request`` on a fresh socket; everything answered until the gateway closes (blocking)."""
    sock = _connect_from(port, host)
    try:
        sock.setblocking(True)
        sock.settimeout(10)
        sock.sendall(request)
        return _recv_until_closed(sock)
    finally:
        sock.close()


def _endless_header(port: int, total: int) -> tuple[bytes, float, int]:
    """One header of ``total`` bytes that never ends: (the answer, seconds to close, bytes sent)."""
    sock = _connect_from(port, "127.0.0.1")
    sock.setblocking(True)
    sock.settimeout(10)
    start = time.monotonic()
    sent = 0
    answer = b""
    try:
        sock.sendall(b"GET /ocpp/BIG HTTP/1.1\r\nHost: x\r\nX-Big: ")
        chunk = b"a" * 65536
        while sent < total:
            try:
                sent += sock.send(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        try:
            answer = _recv_until_closed(sock)
        except OSError:
            pass
    finally:
        sock.close()
    return answer, time.monotonic() - start, sent


class _EdgeTestCase(TestCase):
    extra_config = ""

    @inlineCallbacks
    def setUp(self) -> Any:
        self.authenticator = RecordingAuthenticator()
        self.gw = GatewayHarness(self, self.extra_config, authenticator=self.authenticator)
        yield self.gw.start()

    @inlineCallbacks
    def assertRefused(self, status: int, **kwargs: Any) -> Any:
        """A websockets handshake gets ``status``; returns the response."""
        try:
            yield self.gw.connect("R1", ocpp_client=False, **kwargs)
        except InvalidStatus as e:
            self.assertEqual(e.response.status_code, status)
            return e.response
        self.fail("the handshake was accepted")


class HandshakeSizeTests(_EdgeTestCase):
    @inlineCallbacks
    def test_endless_header_431(self) -> Any:
        """20 MB of one unterminated header: 431 and closed at once; another charge point is served."""
        answer, seconds, sent = yield deferToThread(_endless_header, self.gw.port, 20 * 1024 * 1024)
        self.assertTrue(answer.startswith(b"HTTP/1.1 431 "), answer[:100])
        self.assertLess(seconds, 5)
        self.assertLess(sent, 20 * 1024 * 1024)  # the gateway stopped reading long before the end
        metrics = self.gw.service.metrics
        self.assertEqual(metrics.value("handshakes_refused", status="431", reason="request_too_large"), 1)
        client = yield self.gw.connect("OK1")
        result = yield self.gw.boot(client, "OK1")
        self.assertEqual(result.status, "Accepted")


class BannerTests(_EdgeTestCase):
    @inlineCallbacks
    def test_plain_get_426_no_banner(self) -> Any:
        """A GET without Upgrade, on the listener's path or elsewhere, gets 426; no answer names a server."""
        for path in ("/", "/ocpp/CP1", "/status"):
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            answer = yield deferToThread(_raw, self.gw.port, request)
            head, _, body = answer.partition(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 426 "), answer[:100])
            self.assertIn(b"\r\nSec-WebSocket-Version: 13", head)
            self.assertEqual(body, b"")
            self.assertNotIn(b"server", answer.lower())
            self.assertNotIn(b"autobahn", answer.lower())
        client = yield self.gw.connect("CP1", ocpp_client=False)
        self.assertNotIn("Server", client.websocket.response.headers)
        refused = yield self.assertRefused(400, subprotocols=["ocpp2.0.1"])
        self.assertNotIn("Server", refused.headers)
        self.assertEqual(refused.body, b"no_supported_subprotocol")  # the reason, as the reference answers

    @inlineCallbacks
    def test_other_websocket_version_426(self) -> Any:
        """Sec-WebSocket-Version 8 (Autobahn's other one) gets 426 with Sec-WebSocket-Version: 13."""
        request = UPGRADE.format(cid="V8").replace("Version: 13", "Version: 8").encode()
        answer = yield deferToThread(_raw, self.gw.port, request)
        self.assertTrue(answer.startswith(b"HTTP/1.1 426 "), answer[:100])
        self.assertIn(b"\r\nSec-WebSocket-Version: 13\r\n", answer)
        self.assertEqual(self.gw.messages("ocpp/cp/V8/Presence"), [])


class SubprotocolTests(_EdgeTestCase):
    @inlineCallbacks
    def test_none_offered_served(self) -> Any:
        """A charge point offering no subprotocol boots as OCPP 1.6; the 101 names none (RFC 6455)."""
        client = yield self.gw.connect("NS1", subprotocols=None)
        self.assertIsNone(client.websocket.subprotocol)
        self.assertNotIn("Sec-WebSocket-Protocol", client.websocket.response.headers)
        result = yield self.gw.boot(client, "NS1")
        self.assertEqual(result.status, "Accepted")

    @inlineCallbacks
    def test_unsupported_only_400(self) -> Any:
        """Only ocpp2.0.1, or OCPP1.6 in capitals: 400 no_supported_subprotocol, never 500."""
        for offered in (["ocpp2.0.1"], ["OCPP1.6"]):
            response = yield self.assertRefused(400, subprotocols=offered)
            self.assertEqual(response.reason_phrase, "no_supported_subprotocol")


class FailIfNoSubprotocolTests(_EdgeTestCase):
    extra_config = "[listeners.ws.default]\nfail_if_no_subprotocol = true\n"

    @inlineCallbacks
    def test_none_offered_refused(self) -> Any:
        """With fail_if_no_subprotocol = true, offering none gets 400 no_subprotocol."""
        response = yield self.assertRefused(400, subprotocols=None)
        self.assertEqual(response.reason_phrase, "no_subprotocol")


class ReverseProxyTests(_EdgeTestCase):
    """HAProxy in HTTP mode adds X-Forwarded-For; it connects from 127.0.0.1, the trusted proxy."""

    extra_config = (
        "[listeners.ws.default]\nproxy_address_header = X-Forwarded-For\ntrusted_proxies = 127.0.0.1\n"
    )

    @inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        self.haproxy = HAProxy(self)
        yield self.haproxy.start({"http": (self.gw.port, "")}, http=True)

    def connect_from(self, port: int, cid: str, headers: dict[str, str] | None = None) -> Any:
        """A ChargePoint from 127.0.0.2 to ``port``; fires with (Client, its local port)."""
        loop = self.gw.loop

        async def open_() -> tuple[Client, int]:
            import websockets

            sock = await loop.loop.run_in_executor(None, _connect_from, port)
            websocket = await websockets.connect(
                f"ws://localhost:{port}/ocpp/{cid}",
                sock=sock,
                subprotocols=["ocpp1.6"],
                open_timeout=10,
                additional_headers=headers or {},
            )
            charge_point = ChargePoint(cid, websocket, response_timeout=10)
            return Client(loop, websocket, charge_point), sock.getsockname()[1]

        return loop.run(open_()).addCallback(lambda result: self.gw.clients.append(result[0]) or result)

    @inlineCallbacks
    def assertPeer(self, cid: str, port: int, expected: str, headers: dict[str, str] | None = None) -> Any:
        """``cid`` boots; its presence and the authenticator's Credentials carry ``expected``."""
        client, local_port = yield self.connect_from(port, cid, headers)
        expected = expected.format(port=local_port)
        result = yield self.gw.boot(client, cid)
        self.assertEqual(result.status, "Accepted")
        (presence,) = yield self.gw.wait_messages(f"ocpp/cp/{cid}/Presence", 1)
        self.assertEqual((presence["status"], presence["peer"]), ("connected", expected))
        self.assertEqual([c.peer for c in self.authenticator.seen if c.cid == cid], [expected])

    def test_through_proxy(self) -> Any:
        """Through the proxy, the charge point's own address (127.0.0.2) is reported, not HAProxy's."""
        return self.assertPeer("XF1", self.haproxy.ports["http"], CLIENT_HOST)

    def test_spoof_through_proxy_ignored(self) -> Any:
        """A header the charge point wrote itself sits left of what the proxy added: not believed."""
        spoof = {"X-Forwarded-For": "6.6.6.6"}
        return self.assertPeer("XF2", self.haproxy.ports["http"], CLIENT_HOST, spoof)

    def test_spoof_from_untrusted_peer_ignored(self) -> Any:
        """Straight from an untrusted peer, the header changes nothing: the TCP peer is reported."""
        spoof = {"X-Forwarded-For": "6.6.6.6"}
        return self.assertPeer("XF3", self.gw.port, CLIENT_HOST + ":{port}", spoof)


def _deflate_bomb(zeros: int) -> bytes:
    """A permessage-deflate payload inflating to ``zeros`` bytes of ``0`` (built without holding them)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = b"0" * (1 << 20)
    parts = [compressor.compress(block) for _ in range(zeros >> 20)]
    parts.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(parts)[:-4]


def _masked_frame(payload: bytes, rsv1: bool) -> bytes:
    """A final, masked text frame (RSV1: compressed)."""
    first = 0x81 | (0x40 if rsv1 else 0)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    key = int.from_bytes(mask * ((length + 3) // 4), "big") >> (8 * (-length % 4))
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big") if length else b""
    return header + mask + masked


def _send_bomb(port: int, bomb: bytes) -> tuple[bytes, bytes]:
    """Handshake offering permessage-deflate, then the bomb: (the 101, what came after it)."""
    sock = _connect_from(port, "127.0.0.1")
    try:
        sock.setblocking(True)
        sock.settimeout(10)
        request = UPGRADE.format(cid="BOMB").replace(
            "\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )
        sock.sendall(request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        head, _, rest = answer.partition(b"\r\n\r\n")
        sock.sendall(_masked_frame(bomb, rsv1=True))
        return head, rest + _recv_until_closed(sock)
    finally:
        sock.close()


def _peak_rss_reset() -> bool:
    """Reset this process's peak RSS (VmHWM); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


class CompressionTests(_EdgeTestCase):
    extra_config = "[listeners.ws.default]\ncompress = true\n"

    @inlineCallbacks
    def test_round_trip_compressed(self) -> Any:
        """A websockets client negotiates permessage-deflate and round-trips a Call through the gateway."""
        client = yield self.gw.connect("Z1")
        self.assertIn("permessage-deflate", client.websocket.response.headers["Sec-WebSocket-Extensions"])
        result = yield self.gw.boot(client, "Z1")
        self.assertEqual(result.status, "Accepted")

    @inlineCallbacks
    def test_deflate_bomb_1009(self) -> Any:
        """50 MB of zeros in a ~50 KB compressed frame: closed with 1009, the gateway's memory flat."""
        bomb = _deflate_bomb(50 << 20)
        self.assertLess(len(bomb), 100_000)
        other = yield self.gw.connect("Z2")
        yield self.gw.boot(other, "Z2")
        measured = _peak_rss_reset()
        before = _status_kb("VmHWM" if measured else "VmRSS")
        head, after_101 = yield deferToThread(_send_bomb, self.gw.port, bomb)
        grown = _status_kb("VmHWM" if measured else "VmRSS") - before
        self.assertTrue(head.startswith(b"HTTP/1.1 101"), head)
        self.assertIn(b"permessage-deflate", head)
        self.assertEqual(after_101[0], 0x88, after_101[:20])  # a close frame ...
        self.assertEqual(struct.unpack("!H", after_101[2:4])[0], 1009)  # ... with 1009
        self.assertLess(grown, 20 * 1024, f"peak RSS grew by {grown} KB")  # max_frame_size is 1 MB
        yield other.send('[2,"after","Heartbeat",{}]')
        yield self.gw.wait_messages("ocpp/cp/Z2", 2)
