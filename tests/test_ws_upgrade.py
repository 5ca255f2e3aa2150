"""Before the 101: the request's byte budget, refusals without a banner, subprotocols, the address
behind a reverse proxy and the permessage-deflate offer (sans-IO parts and OcppServerProtocol over
a StringTransport).
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import txaio
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from txaio.testutil import replace_loop
from zope.interface import implementer

from ocppgw.auth import AllowAll
from ocppgw.config import config_from_string
from ocppgw.core.ports import Credentials, Decision, IAuthenticator
from ocppgw.core.router import Router
from ocppgw.metrics import Metrics
from ocppgw.ws.handshake import (
    HeadTooLarge,
    RequestHead,
    forwarded_address,
    host_of,
    refusal_response,
    version_refused,
)
from ocppgw.ws.server import OcppServerFactory
from tests.fakes import FakeMqttLink
from tests.test_ws_server import _Transport, client_frame, open_protocol, upgrade_request

txaio.use_twisted()

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1"))


class ForwardedAddressTests(SynchronousTestCase):
    """forwarded_address() takes the right-most untrusted address, from trusted peers only."""

    def test_untrusted_peer_ignored(self) -> None:
        """A header from a peer outside trusted_proxies changes nothing (a spoof)."""
        self.assertIsNone(forwarded_address("203.0.113.9", "1.2.3.4", TRUSTED))
        self.assertIsNone(forwarded_address("unknown", "1.2.3.4", TRUSTED))

    def test_no_header_or_no_trust(self) -> None:
        """No header, an empty one, or no trusted proxies at all: the peer's own address."""
        self.assertIsNone(forwarded_address("10.0.0.1", None, TRUSTED))
        self.assertIsNone(forwarded_address("10.0.0.1", "", TRUSTED))
        self.assertIsNone(forwarded_address("10.0.0.1", "1.2.3.4", ()))

    def test_right_most_untrusted(self) -> None:
        """Trusted hops are skipped from the right; whatever the client wrote further left is not read."""
        self.assertEqual(forwarded_address("10.0.0.1", "1.2.3.4", TRUSTED), "1.2.3.4")
        self.assertEqual(forwarded_address("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.9.9.9", TRUSTED), "1.2.3.4")
        self.assertEqual(forwarded_address("127.0.0.1", "6.6.6.6,1.2.3.4", TRUSTED), "1.2.3.4")

    def test_all_trusted(self) -> None:
        """When every entry is a trusted proxy, the left-most is the origin."""
        self.assertEqual(forwarded_address("10.0.0.1", "10.0.0.7, 10.0.0.8", TRUSTED), "10.0.0.7")

    def test_malformed_stops_at_last_trusted_hop(self) -> None:
        """An entry that is no address stops the walk: the last trusted hop is what can be vouched for."""
        self.assertEqual(forwarded_address("10.0.0.1", "1.2.3.4, unknown, 10.0.0.5", TRUSTED), "10.0.0.5")
        self.assertIsNone(forwarded_address("10.0.0.1", "1.2.3.4, garbage", TRUSTED))
        self.assertIsNone(forwarded_address("10.0.0.1", "1.2.3.4, ", TRUSTED))
        self.assertIsNone(forwarded_address("10.0.0.1", "999.1.1.1", TRUSTED))
        self.assertIsNone(forwarded_address("10.0.0.1", "[1.2.3.4]", TRUSTED))
        self.assertIsNone(forwarded_address("10.0.0.1", "1.2.3.4:99999x", TRUSTED))

    def test_ipv6_and_ports(self) -> None:
        """IPv6 (bare or bracketed), ports kept as the peer address is written elsewhere."""
        self.assertEqual(forwarded_address("10.0.0.1", "2001:DB8::1", TRUSTED), "2001:db8::1")
        self.assertEqual(forwarded_address("10.0.0.1", "[2001:db8::1]:443", TRUSTED), "[2001:db8::1]:443")
        self.assertEqual(forwarded_address("10.0.0.1", "1.2.3.4:5678", TRUSTED), "1.2.3.4:5678")

    def test_mapped_ipv4_peer(self) -> None:
        """An IPv4-mapped IPv6 peer (a dual-stack socket) is matched against IPv4 networks."""
        self.assertEqual(forwarded_address("::ffff:10.0.0.1", "1.2.3.4", TRUSTED), "1.2.3.4")

    def test_host_of(self) -> None:
        """host_of() undoes peer_address()'s ``host:port`` and ``[v6]:port``."""
        self.assertEqual(
            [host_of("1.2.3.4:5"), host_of("[::1]:5"), host_of("unknown")], ["1.2.3.4", "::1", "unknown"]
        )


class RequestHeadTests(SynchronousTestCase):
    """RequestHead holds bytes until the blank line, within its limit."""

    def test_split_blank_line(self) -> None:
        """A blank line split over chunks is found; what follows it comes with the head."""
        head = RequestHead(100)
        fed = [head.feed(b"GET / HTTP/1.1\r"), head.feed(b"\n\r"), head.feed(b"")]
        self.assertEqual(fed, [b"", b"", b""])
        self.assertEqual(head.feed(b"\nrest"), b"GET / HTTP/1.1\r\n\r\nrest")
        self.assertTrue(head.complete)

    def test_bytes_after_head_held(self) -> None:
        """Bytes after the head are held (released on demand) and count against the limit."""
        head = RequestHead(30)
        head.feed(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual((head.feed(b"early"), head.release(), head.release()), (b"", b"early", b""))
        self.assertRaises(HeadTooLarge, head.feed, b"x" * 10)

    def test_limit(self) -> None:
        """A head exactly at the limit passes; one byte more, or no end within it, raises."""
        request = b"GET / HTTP/1.1\r\nA: b\r\n\r\n"
        self.assertEqual(RequestHead(len(request)).feed(request), request)
        self.assertRaises(HeadTooLarge, RequestHead(len(request) - 1).feed, request)
        head = RequestHead(1000)
        for _ in range(1000):
            self.assertEqual(head.feed(b"x"), b"")
        self.assertRaises(HeadTooLarge, head.feed, b"x")

    def test_each_byte_scanned_once(self) -> None:
        """No rescans: the bytes kept for a split blank line are at most 3, whatever was fed."""
        head = RequestHead(1 << 20)
        for _ in range(1000):
            head.feed(b"y" * 100)
        self.assertLessEqual(len(head._tail), 3)


class RefusalResponseTests(SynchronousTestCase):
    """refusal_response() and version_refused(), the sans-IO half of a refusal."""

    def test_tokens_kept_free_text_replaced(self) -> None:
        """The gateway's tokens stay in the status line; free text quoting the request does not."""
        self.assertEqual(
            refusal_response(400, "no_subprotocol"),
            b"HTTP/1.1 400 no_subprotocol\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n"
            b"Connection: close\r\n\r\nno_subprotocol",
        )
        answer = refusal_response(400, 'bad Sec-WebSocket-Key "<script>"')
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        self.assertNotIn(b"script", answer)
        self.assertIn(b"HTTP/1.1 599 Refused", refusal_response(599, "?"))

    def test_version(self) -> None:
        """Only an upgrade request naming a version other than 13 (or none) is a version refusal."""
        self.assertTrue(version_refused({"upgrade": "websocket", "sec-websocket-version": "8"}))
        self.assertTrue(version_refused({"upgrade": "WebSocket", "sec-websocket-version": "abc"}))
        self.assertTrue(version_refused({"upgrade": "websocket"}))
        self.assertFalse(version_refused({"upgrade": "websocket", "sec-websocket-version": "13"}))
        self.assertFalse(version_refused({"sec-websocket-version": "8"}))


@implementer(IAuthenticator)
class _PendingAuthenticator:
    """Decides only when the test says so."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Decision]] = []
        self.seen: list[Credentials] = []

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        self.seen.append(credentials)
        d: Deferred[Decision] = Deferred()
        self.pending.append(d)
        return d


class _ProtocolTestCase(SynchronousTestCase):
    listener_options = ""
    gateway_options = ""
    authenticator: Any = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.link = FakeMqttLink(connected=True)
        config = config_from_string(
            "[gateway]\ndefault_heartbeat_interval = 60s\nping_interval = 0\n"
            f"{self.gateway_options}[listeners.ws.default]\nbind = 33033\n{self.listener_options}"
        )
        self.metrics = Metrics()
        self.router = Router(config, self.link, self.clock, self.metrics)
        authenticator = self.authenticator or AllowAll()
        with replace_loop(self.clock):
            self.factory = OcppServerFactory(
                self.router, authenticator, config.listeners[0], config.gateway, self.metrics, self.clock
            )
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def connect(self, *chunks: bytes, host: str = "10.1.2.3") -> tuple[Any, _Transport]:
        return open_protocol(self.factory, self.clock, list(chunks), host)

    def tearDown(self) -> None:
        for call in self.clock.getDelayedCalls():
            call.cancel()


class BannerAndVersionTests(_ProtocolTestCase):
    """No answer names the server; one WebSocket version."""

    def test_101_has_no_server_header(self) -> None:
        """The 101 carries no Server header."""
        _, transport = self.connect(upgrade_request("/ocpp/CP1"))
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 101"), response)
        self.assertNotIn(b"server:", response.lower())
        self.assertNotIn(b"autobahn", response.lower())

    def test_plain_get_426(self) -> None:
        """A GET without Upgrade gets 426 naming version 13, no status page, no server name."""
        for path in (b"/", b"/ocpp/CP1", b"/other?redirect=http%3A%2F%2Fexample.com"):
            _, transport = self.connect(b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
            response = transport.value()
            self.assertTrue(response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"), response)
            self.assertIn(b"\r\nSec-WebSocket-Version: 13\r\n", response)
            self.assertTrue(response.endswith(b"\r\n\r\n"), response)
            self.assertNotIn(b"server", response.lower())
            self.assertNotIn(b"autobahn", response.lower())
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.metrics.value("handshakes_refused", status="426", reason="upgrade_required"), 3)

    def test_other_versions_426(self) -> None:
        """Versions 8, 12, a non-number or none get 426 with Sec-WebSocket-Version: 13."""
        request = upgrade_request("/ocpp/CP1").decode()
        for version in ("8", "12", "abc"):
            changed = request.replace("Sec-WebSocket-Version: 13", f"Sec-WebSocket-Version: {version}")
            _, transport = self.connect(changed.encode())
            response = transport.value()
            self.assertTrue(response.startswith(b"HTTP/1.1 426 "), response)
            self.assertIn(b"\r\nSec-WebSocket-Version: 13\r\n", response)
        missing = request.replace("Sec-WebSocket-Version: 13\r\n", "")
        _, transport = self.connect(missing.encode())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 426 "), transport.value())
        self.assertIsNone(self.router.session("CP1"))

    def test_autobahn_reasons_not_echoed(self) -> None:
        """A refusal Autobahn words itself quotes nothing of the request, nor logs more than 200 chars."""
        request = upgrade_request("/ocpp/CP1").decode()
        request = request.replace("Upgrade: websocket", "Upgrade: " + "<x>" * 3000)
        _, transport = self.connect(request.encode())
        self.assertEqual(transport.value(), refusal_response(400, "free text"))
        (event,) = [e for e in self.events if e.get("detail") is not None]
        self.assertLessEqual(len(event["detail"]), 200)


class HandshakeSizeTests(_ProtocolTestCase):
    """max_handshake_size bounds the request head."""

    gateway_options = "max_handshake_size = 1KB\n"

    def test_endless_header_431(self) -> None:
        """A header that never ends gets 431 once it passes the limit, counted and logged once."""
        protocol, transport = self.connect(b"GET /ocpp/CP1 HTTP/1.1\r\nX-Long: ", *([b"a" * 100] * 50))
        response = transport.value()
        self.assertEqual(response, refusal_response(431, "request_too_large"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(protocol.data), 0)
        refused = self.metrics.value("handshakes_refused", status="431", reason="request_too_large")
        self.assertEqual(refused, 1)
        self.assertEqual(len([e for e in self.events if "431" in e.get("log_format", "")]), 1)

    def test_head_at_limit_accepted(self) -> None:
        """A request padded to exactly the limit is served."""
        request = upgrade_request("/ocpp/CP1")
        padding = 1024 - len(request) - len("X-Pad: \r\n")
        padded = upgrade_request("/ocpp/CP1", extra="X-Pad: " + "p" * padding)
        self.assertEqual(len(padded), 1024)
        _, transport = self.connect(*[padded[i : i + 7] for i in range(0, len(padded), 7)])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101"), transport.value())


class EarlyBytesTests(_ProtocolTestCase):
    """Bytes sent after the request and before the 101 wait for the WebSocket to open."""

    def setUp(self) -> None:
        self.authenticator = _PendingAuthenticator()
        super().setUp()

    def test_frame_before_101_delivered_after(self) -> None:
        """A Call sent while the authenticator decides is handled once the socket opens."""
        frame = client_frame(b'[2,"u1","Heartbeat",{}]')
        _, transport = self.connect(upgrade_request("/ocpp/CP1"), frame)
        self.assertEqual(transport.value(), b"")
        with replace_loop(self.clock):
            self.authenticator.pending[0].callback(Decision.allow())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101"))
        (published,) = self.link.published_to("ocpp/cp/CP1")
        self.assertEqual(published.json()["UniqueId"], "u1")

    def test_refusal_adds_no_log_line(self) -> None:
        """An authenticator's refusal is logged once, where it was decided (the auth gate's line): the
        refused connection's drop adds no warning of Autobahn's repeating it."""
        _, transport = self.connect(upgrade_request("/ocpp/CP1"))
        with replace_loop(self.clock):
            self.authenticator.pending[0].callback(Decision.deny("not_authorized"))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 401 "), transport.value())
        self.assertTrue(transport.disconnecting)
        loud = [formatEvent(e) for e in self.events if e.get("log_level", LogLevel.info) >= LogLevel.info]
        self.assertEqual(loud, [])

    def test_second_request_not_parsed(self) -> None:
        """A second request head sent before the 101 is not taken for another handshake."""
        self.connect(upgrade_request("/ocpp/CP1"), upgrade_request("/ocpp/CP9"))
        self.assertEqual([c.cid for c in self.authenticator.seen], ["CP1"])


class SubprotocolTests(_ProtocolTestCase):
    """A charge point that offers no subprotocol is served as OCPP 1.6, naming none."""

    def test_none_offered_served_without_header(self) -> None:
        """No Sec-WebSocket-Protocol asked, none answered; the charge point is attached."""
        _, transport = self.connect(upgrade_request("/ocpp/CP1", protocols=None))
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 101"), response)
        self.assertNotIn(b"sec-websocket-protocol", response.lower())
        self.assertIsNotNone(self.router.session("CP1"))

    def test_unsupported_only(self) -> None:
        """Only unsupported (or differently spelled) subprotocols: 400 no_supported_subprotocol."""
        for offered in ("ocpp2.0.1", "OCPP1.6", "ocpp2.0.1, ocpp1.5"):
            _, transport = self.connect(upgrade_request("/ocpp/CP1", protocols=offered))
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 no_supported_subprotocol\r\n"))


class FailIfNoSubprotocolTests(_ProtocolTestCase):
    """fail_if_no_subprotocol = true refuses a charge point offering none."""

    listener_options = "fail_if_no_subprotocol = true\n"

    def test_refused(self) -> None:
        """400 no_subprotocol, counted."""
        _, transport = self.connect(upgrade_request("/ocpp/CP1", protocols=None))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 no_subprotocol\r\n"), transport.value())
        self.assertEqual(self.metrics.value("handshakes_refused", status="400", reason="no_subprotocol"), 1)


class ProxyHeaderTests(_ProtocolTestCase):
    """proxy_address_header is believed from trusted_proxies only."""

    listener_options = "proxy_address_header = X-Forwarded-For\ntrusted_proxies = 10.0.0.0/8\n"

    def setUp(self) -> None:
        self.authenticator = _PendingAuthenticator()
        super().setUp()

    def test_trusted_peer(self) -> None:
        """From a trusted proxy, the charge point's address reaches the authenticator and the protocol."""
        request = upgrade_request("/ocpp/CP1", extra="X-Forwarded-For: 6.6.6.6, 192.0.2.7")
        protocol, _ = self.connect(request, host="10.1.2.3")
        self.assertEqual(protocol.peer_address, "192.0.2.7")
        self.assertEqual(self.authenticator.seen[0].peer, "192.0.2.7")

    def test_untrusted_peer(self) -> None:
        """From anyone else the header is a spoof and changes nothing."""
        request = upgrade_request("/ocpp/CP1", extra="X-Forwarded-For: 192.0.2.7")
        protocol, _ = self.connect(request, host="198.51.100.1")
        self.assertEqual(protocol.peer_address, "198.51.100.1:5555")
        self.assertEqual(self.authenticator.seen[0].peer, "198.51.100.1:5555")


class CompressionTests(_ProtocolTestCase):
    """compress = true accepts a permessage-deflate offer."""

    listener_options = "compress = true\n"
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"

    def test_accepted(self) -> None:
        """The 101 carries the extension when offered."""
        _, transport = self.connect(upgrade_request("/ocpp/CP1", extra=self.offer))
        self.assertIn(b"\r\nSec-WebSocket-Extensions: permessage-deflate", transport.value())


class NoCompressionTests(CompressionTests):
    """compress = false (the default) declines it."""

    listener_options = ""

    def test_accepted(self) -> None:
        """The 101 carries no extension."""
        _, transport = self.connect(upgrade_request("/ocpp/CP1", extra=self.offer))
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 101"), response)
        self.assertNotIn(b"extensions", response.lower())


class MessageTooBigTests(_ProtocolTestCase):
    """A message over max_frame_size is answered with a 1009 close frame, not a bare drop."""

    gateway_options = "max_frame_size = 1KB\n"

    def test_1009(self) -> None:
        """2 KB in one frame: close frame 1009, counted; nothing published."""
        protocol, transport = self.connect(upgrade_request("/ocpp/CP1"))
        transport.clear()
        with replace_loop(self.clock):
            protocol.dataReceived(client_frame(b'[2,"u1","Heartbeat",{"x":"' + b"a" * 2048 + b'"}]'))
        sent = transport.value()
        self.assertEqual((sent[0], struct.unpack("!H", sent[2:4])[0]), (0x88, 1009))
        self.assertEqual(self.metrics.value("frames_invalid", code="too_big"), 1)
        self.assertEqual(self.link.published_to("ocpp/cp/CP1"), [])
