"""ClaimOutbox: a member's claims and releases, one message per reactor turn, never dropped."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.core.cluster_outbox import BATCH_BYTES, ClaimOutbox
from ocppgw.core.cluster_wire import MAX_CONTROL_BYTES
from ocppgw.core.states import LatestStates
from ocppgw.metrics import Metrics
from tests.fakes import FakeMqttLink

TOPIC = "ocpp/gateway/cluster/takeover"


class ClaimOutboxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.link = FakeMqttLink(connected=True)
        self.clock = Clock()
        self.states = LatestStates(self.link, Metrics())
        self.outbox = ClaimOutbox(self.link, self.clock, self.states, TOPIC, "gw1/w0")

    def batches(self) -> list[dict[str, Any]]:
        return [json.loads(m.payload) for m in self.link.published if m.topic == TOPIC]

    def test_one_message_per_turn_in_order(self) -> None:
        """What a turn claims and releases goes out at its end as one QoS 1 message, not retained,
        in order; the next turn's in the next message."""
        self.outbox.claim("A", 1.5, "ocpp/cp/A/Presence", "10.0.0.1:1")
        self.outbox.release("B", 0.5)
        self.outbox.claim("C", 1.5, "", "")
        self.assertEqual(self.link.published, [])
        self.clock.advance(0)
        self.assertEqual(
            self.batches(),
            [
                {
                    "member": "gw1/w0",
                    "claims": [
                        {"clientid": "A", "at": 1.5, "presence": "ocpp/cp/A/Presence", "peer": "10.0.0.1:1"},
                        {"clientid": "B", "at": 0.5, "released": True},
                        {"clientid": "C", "at": 1.5, "presence": "", "peer": ""},
                    ],
                }
            ],
        )
        self.assertEqual([(m.qos, m.retain) for m in self.link.published], [(1, False)])
        self.outbox.release("A", 1.5)
        self.clock.advance(0)
        self.assertEqual([len(b["claims"]) for b in self.batches()], [3, 1])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_split_under_the_control_message_limit(self) -> None:
        """Thousands of long claims in one turn: several messages, each under ``BATCH_BYTES``, every
        claim once and in order."""
        presence = "p/" + "x" * 1000
        for n in range(2000):
            self.outbox.claim(f"CP{n}", float(n), presence, "10.0.0.1:65535")
        self.clock.advance(0)
        self.assertGreater(len(self.link.published), 50)
        self.assertTrue(all(len(m.payload) <= BATCH_BYTES < MAX_CONTROL_BYTES for m in self.link.published))
        cids = [c["clientid"] for b in self.batches() for c in b["claims"]]
        self.assertEqual(cids, [f"CP{n}" for n in range(2000)])

    def test_full_link_waits_after_the_states_latest_per_charge_point(self) -> None:
        """A full link: the claims wait (a newer claim of a charge point replacing its unsent one) and
        go out after the presence that waited before them, as room comes."""
        self.link.room_left = 0
        self.states.publish("ocpp/cp/A/Presence", b"connected", 1)
        self.outbox.claim("A", 1.0, "", "")
        self.outbox.release("A", 1.0)
        self.outbox.claim("A", 2.0, "", "")
        self.clock.advance(0)
        self.link.room_left = 5  # room, but the link has not told its observers yet
        self.outbox.claim("B", 2.0, "", "")
        self.clock.advance(0)  # the presence still waits: the claims must not overtake it
        self.assertEqual((self.link.published, len(self.outbox)), ([], 3))
        self.link.room_left = 0
        self.link.give_room(1)  # the presence only: the claims wait behind it
        self.assertEqual([m.topic for m in self.link.published], ["ocpp/cp/A/Presence"])
        self.assertEqual(len(self.outbox), 3)
        self.link.give_room(1)
        claims = self.batches()[0]["claims"]
        self.assertEqual([(c["clientid"], c["at"], "released" in c) for c in claims],
                         [("A", 1.0, True), ("A", 2.0, False), ("B", 2.0, False)])  # fmt: skip
        self.assertEqual(len(self.outbox), 0)

    def test_refused_publish_keeps_the_claims(self) -> None:
        """The link refusing the message (its buffer filled in between): nothing is lost."""
        self.outbox.claim("A", 1.0, "", "")
        self.link.refuse_publishes = True
        self.clock.advance(0)
        self.assertEqual(len(self.outbox), 1)
        self.link.refuse_publishes = False
        self.outbox.flush()
        self.assertEqual([c["clientid"] for c in self.batches()[0]["claims"]], ["A"])
