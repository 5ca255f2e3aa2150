"""Who ended a connection, as the log line, ``disconnects{reason}`` and the presence tell it.

Each way the gateway closes or aborts a charge point is driven on a ``Clock``; Autobahn alone would
report every abort as the charge point's 1006.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.ws.limits import ListenerLimits
from ocppgw.ws.server import CLOSE_HANDSHAKE_TIMEOUT
from tests.test_limits import FakeSocket, listener
from tests.test_ws_server import client_frame, upgrade_request
from tests.test_ws_timers import ClockedGateway


class CloseReasonTests(SynchronousTestCase):
    def make(self, gateway: str = "ping_interval = 0\n") -> ClockedGateway:
        self.gateway = ClockedGateway(self, gateway)
        return self.gateway

    def assertEnded(self, cause: str, reason: str) -> None:
        """CP1's last presence says ``reason``; ``disconnects`` counted it under ``cause`` alone."""
        presence = self.gateway.presence()
        self.assertEqual([p["status"] for p in presence], ["connected", "disconnected"])
        self.assertEqual(presence[-1]["reason"], reason)
        metrics = self.gateway.metrics
        self.assertEqual(metrics.value("disconnects", reason=cause), 1)
        self.assertEqual(metrics.total("disconnects"), 1)

    def aborted_after(self, gateway: str, *steps: float) -> None:
        """CP1 connects and stays silent for ``steps`` seconds; the gateway has aborted its socket."""
        protocol, transport = self.make(gateway).open()
        self.gateway.clock.pump(list(steps))
        self.assertIsNotNone(transport.aborted_at)
        self.gateway.lose(protocol)

    def test_ping_timeout(self) -> None:
        """No pong within ping_timeout: closed by the gateway, cause ping_timeout."""
        self.aborted_after("ping_interval = 500ms\nping_timeout = 500ms\n", 0.5, 0.5)
        self.assertEnded("ping_timeout", "closed by gateway: no pong within 0.5s")

    def test_liveness(self) -> None:
        """Silence past the heartbeat deadline: the session closes it, the close goes unanswered."""
        self.aborted_after(
            "ping_interval = 0\ndefault_heartbeat_interval = 10s\n", 10, CLOSE_HANDSHAKE_TIMEOUT
        )
        self.assertEnded("gateway", "closed by gateway: no data for 10s")

    def test_liveness_close_answered(self) -> None:
        """The charge point answers the gateway's close: still the gateway's close, with its reason."""
        gateway = self.make("ping_interval = 0\ndefault_heartbeat_interval = 10s\n")
        protocol, _ = gateway.open()
        gateway.clock.advance(10)
        protocol.dataReceived(client_frame(b"\x03\xe8", opcode=8))
        gateway.lose(protocol)
        self.assertEnded("gateway", "closed by gateway: no data for 10s")

    def test_autobahn_fails_the_connection(self) -> None:
        """An unmasked client frame: Autobahn drops the connection, and it is the gateway's doing
        (cause protocol_error), with Autobahn's reason."""
        gateway = self.make("ping_interval = 0\n")
        protocol, transport = gateway.open()
        protocol.dataReceived(b"\x81\x02hi")
        self.assertTrue(transport.disconnecting)
        gateway.lose(protocol)
        reason = gateway.presence()[-1]["reason"]
        self.assertTrue(reason.startswith("closed by gateway: "), reason)
        self.assertIn("unmasked client-to-server frame", reason)
        self.assertEqual(gateway.metrics.value("disconnects", reason="protocol_error"), 1)

    def test_message_too_big(self) -> None:
        """A frame over max_frame_size is closed with 1009 by the gateway (cause frame_too_big)."""
        gateway = self.make("ping_interval = 0\nmax_frame_size = 64\n")
        protocol, transport = gateway.open()
        protocol.dataReceived(client_frame(b"x" * 100))
        self.assertIn(b"\x88", transport.value())  # a close frame went out
        gateway.lose(protocol)
        reason = gateway.presence()[-1]["reason"]
        self.assertEqual(reason, "closed by gateway: message over 64 bytes")
        self.assertEqual(gateway.metrics.value("disconnects", reason="frame_too_big"), 1)

    def test_send_timeout(self) -> None:
        """The limits layer aborts a peer that does not read: the WebSocket above reports send_timeout."""
        gateway = self.make()
        limits = ListenerLimits(gateway.factory, listener(send_timeout=1.0), gateway.clock, gateway.metrics)
        socket = FakeSocket(gateway.clock)
        limited = limits.buildProtocol(socket.getPeer())
        limited.makeConnection(socket)
        limited.dataReceived(upgrade_request("/ocpp/CP1"))
        self.assertIsNotNone(gateway.router.session("CP1"))
        gateway.clock.pump([0.25] * 8)
        self.assertTrue(socket.aborted)
        limited.connectionLost(Failure(ConnectionAborted()))
        self.assertEnded("send_timeout", "closed by gateway: peer has not read for 1s")

    def test_charge_point_closes(self) -> None:
        """A close frame from the charge point: closed by the charge point, with its code and reason."""
        gateway = self.make()
        protocol, _ = gateway.open()
        protocol.dataReceived(client_frame(b"\x03\xe8bye", opcode=8))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEnded("charge_point", "closed by charge point (1000: bye)")

    def test_connection_lost(self) -> None:
        """The TCP connection gone without a close frame: lost, not closed by anyone."""
        gateway = self.make()
        protocol, _ = gateway.open()
        gateway.lose(protocol)
        presence = gateway.presence()[-1]
        self.assertTrue(presence["reason"].startswith("connection lost ("), presence)
        self.assertEqual(gateway.metrics.value("disconnects", reason="connection_lost"), 1)

    def test_first_reason_stays(self) -> None:
        """A close after the gateway already noted why it ends the connection keeps the first reason."""
        gateway = self.make()
        protocol, _ = gateway.open()
        protocol.note_close("shutdown", "gateway shutting down")
        protocol.close(1001, "something else")
        gateway.lose(protocol)
        self.assertEnded("shutdown", "closed by gateway: gateway shutting down")
