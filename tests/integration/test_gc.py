"""Closed connections and Calls in either direction leave no reference cycle: reference counting frees them.

``ocppgw.runtime.GcPolicy`` freezes live objects out of the collector's view, which is safe only if
closing a connection leaves nothing that needs the cycle collector (a frozen cycle is never freed).
Raw WebSocket clients connect, then leave by a close frame or by dropping the TCP connection; the
collector must then find no protocol, wrapper or session among the unreachable objects.
"""

from __future__ import annotations

import gc
import os
from collections import Counter
from typing import Any

from ocpp.v16 import call
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import ClientFactory
from twisted.trial.unittest import TestCase

from tests.integration.harness import GatewayHarness
from tests.integration.test_presence_storm import _IdleCharger
from tests.support import poll_until

NOW = "2026-12-01T12:00:00Z"
GATEWAY_PACKAGES = ("ocppgw.", "autobahn.", "paho.")
"""Whose objects must never be cyclic garbage (the test's own clients run in this process too)."""

WATCHED = {"OcppServerProtocol", "LimitedProtocol", "ChargePointSession", "Upstream", "Server", "Attached"}


class _ClosingCharger(_IdleCharger):
    """Leaves with a close frame (masked, code 1000) once the gateway has answered the upgrade."""

    def dataReceived(self, data: bytes) -> None:
        if b"101 Switching Protocols" in data:
            self.transport.write(_masked_close())


def _masked_close() -> bytes:
    mask = os.urandom(4)
    payload = (1000).to_bytes(2, "big")
    return b"\x88\x82" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class GarbageTests(TestCase):
    @inlineCallbacks
    def test_closed_connections_leave_no_cycles(self) -> Any:
        gw = GatewayHarness(self, extra_config="[listeners.ws.default]\nmax_conn_rate = infinity\n")
        yield gw.start()
        router = gw.service.router
        chargers: list[_IdleCharger] = []

        def open_many(kind: type[_IdleCharger], prefix: str, count: int) -> None:
            for n in range(count):
                charger = kind(f"{prefix}{n}")
                chargers.append(charger)
                reactor.connectTCP("127.0.0.1", gw.port, ClientFactory.forProtocol(lambda c=charger: c))

        open_many(_IdleCharger, "DROP", 50)
        yield poll_until(lambda: len(router.attached()) == 50, timeout=30)
        gc.collect()
        garbage_before = len(gc.garbage)
        for charger in chargers:
            charger.transport.abortConnection()
        open_many(_ClosingCharger, "BYE", 50)
        yield poll_until(lambda: gw.service.metrics.total("disconnects") == 100, timeout=30)
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found = Counter(type(o).__name__ for o in gc.garbage[garbage_before:])
        finally:
            gc.set_debug(0)
            del gc.garbage[garbage_before:]
        self.assertEqual({name: n for name, n in found.items() if name in WATCHED}, {})
        metrics = gw.service.metrics
        self.assertEqual(metrics.value("disconnects", reason="charge_point"), 50)
        self.assertEqual(metrics.value("disconnects", reason="connection_lost"), 50)

    @inlineCallbacks
    def test_round_trips_leave_no_cycles(self) -> Any:
        """An upstream Call answered from MQTT and a downstream Call answered by the charge point leave
        no object of the gateway's packages to the cycle collector: ``GcPolicy`` freezes every second,
        so a cycle alive at a freeze would never be freed."""
        gw = GatewayHarness(self)
        yield gw.start()
        clients = []
        for n in range(10):
            cid = f"RT{n}"
            client = yield gw.connect(cid)
            yield gw.boot(client, cid)
            clients.append((cid, client))
        gc.collect()
        garbage_before = len(gc.garbage)
        for n, (cid, client) in enumerate(clients):
            reply = client.call(call.Heartbeat())
            (_, beat) = yield gw.wait_messages(f"ocpp/cp/{cid}", 2)
            answer = {"currentTime": NOW}
            gw.publish(cid, {"MessageTypeId": 3, "UniqueId": beat["UniqueId"], "Payload": answer})
            yield reply
            command = {"MessageTypeId": 2, "UniqueId": f"down-{n}", "Action": "ClearCache", "Payload": {}}
            gw.publish(cid, command)
            yield gw.wait_messages(f"ocpp/cp/{cid}/Reply", 1)
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found = Counter(
                f"{type(o).__module__}.{type(o).__qualname__}"
                for o in gc.garbage[garbage_before:]
                if type(o).__module__.startswith(GATEWAY_PACKAGES)
            )
        finally:
            gc.set_debug(0)
            del gc.garbage[garbage_before:]
        self.assertEqual(dict(found), {})
