"""A flood of commands for one charge point through the gateway's one MQTT session (issue 9, item 14).

Every charge point's commands share that session, so the broker's per-client limits are the
gateway's limits; README "Hardening", "The broker", says which to raise. With them raised as it
says, 15,000 commands published at once to one charge point cost another charge point nothing,
and none of the 15,000 is lost without an answer: each is sent, queued, or refused with a
GenericError envelope (the charge point's queue holds 100).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.integration.harness import GatewayHarness

FLOOD = 15_000
OTHER = 100  # no more than its own queue holds: what is tested is the flood, not that queue
QUEUE = 100


def _command(unique_id: str) -> bytes:
    body = {"MessageTypeId": 2, "UniqueId": unique_id, "Action": "ClearCache", "Payload": {}}
    return json.dumps(body).encode()


class DownstreamFloodTests(TestCase):
    timeout = 180

    @inlineCallbacks
    def setUp(self) -> Any:
        self.gw = GatewayHarness(
            self,
            # reply_timeout: the call in flight must not time out on a slow machine (its error would
            # count as one of the refusals, and the next queued call would take its place)
            f"[dnstream]\nmax_mqueue_len = {QUEUE}\nreply_timeout = 600s\n"
            "[mqtt]\nmax_buffered_messages = 50000\n",
            # the broker limits README "Hardening" tells operators to raise for the gateway's session
            broker_settings=(
                "max_queued_messages 100000",
                "max_inflight_messages 1000",
                "set_tcp_nodelay true",
            ),
        )
        yield self.gw.start()

    @inlineCallbacks
    def test_flood_for_one_costs_another_nothing(self) -> Any:
        """15,000 commands for a charge point that never answers, then 100 for one that does: all 100
        are answered, and every one of the 15,000 beyond the one in flight and the queue gets its
        GenericError envelope."""
        yield self.gw.connect("FLOOD", ocpp_client=False)  # reads nothing back: its queue fills
        yield self.gw.connect("OTHER")  # the ocpp package's charge point: answers ClearCache
        for n in range(FLOOD):
            self.gw.publish("FLOOD", _command(f"f{n}"))
        for n in range(OTHER):
            self.gw.publish("OTHER", _command(f"o{n}"))
        replies = yield self.gw.wait_messages("ocpp/cp/OTHER/Reply", OTHER, timeout=120)
        self.assertEqual(sorted(m["UniqueId"] for m in replies), sorted(f"o{n}" for n in range(OTHER)))
        self.assertEqual([m for m in replies if m["MessageTypeId"] != 3], [])
        refused = FLOOD - 1 - QUEUE
        errors = yield self.gw.wait_messages("ocpp/cp/FLOOD/Reply", refused, timeout=120)
        self.assertEqual({m["ErrorCode"] for m in errors}, {"GenericError"})
        self.assertEqual(len({m["UniqueId"] for m in errors}), refused)
        self.assertEqual(self.gw.service.metrics.value("dnstream_dropped", action="ClearCache"), refused)
