"""LatestStates: retained state messages held while the broker link is full, never dropped."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.core.states import LatestStates
from ocppgw.metrics import Metrics
from tests.fakes import FakeMqttLink


class LatestStatesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.link = FakeMqttLink(connected=True)
        self.metrics = Metrics()
        self.states = LatestStates(self.link, self.metrics)

    def sent(self) -> list[tuple[str, bytes]]:
        return [(m.topic, m.payload) for m in self.link.published]

    def test_published_at_once_with_room(self) -> None:
        """With room, a state goes to the link at once, retained, with its QoS."""
        self.states.publish("cp/A", b"connected", 1)
        self.assertEqual([(m.topic, m.qos, m.retain) for m in self.link.published], [("cp/A", 1, True)])
        self.assertEqual(len(self.states), 0)
        self.assertEqual(self.metrics.value("presence_deferred"), 0)

    def test_held_while_full_and_published_as_room_comes(self) -> None:
        """A full link holds every state (one per topic); room observers publish them oldest first,
        only as many as there is room for."""
        self.link.room_left = 1
        for name in "ABCD":
            self.states.publish(f"cp/{name}", b"disconnected", 1)
        self.assertEqual(self.sent(), [("cp/A", b"disconnected")])
        self.assertEqual(len(self.states), 3)
        self.assertEqual(self.metrics.value("presence_waiting"), 3)
        self.assertEqual(self.link.refused, [])  # the room was asked for, nothing was refused
        self.link.give_room(2)
        self.assertEqual([t for t, _ in self.sent()], ["cp/A", "cp/B", "cp/C"])
        self.link.give_room(5)
        self.assertEqual([t for t, _ in self.sent()], ["cp/A", "cp/B", "cp/C", "cp/D"])
        self.assertEqual(len(self.states), 0)
        self.assertEqual(self.metrics.value("presence_deferred"), 3)

    def test_newer_state_replaces_the_unsent_one(self) -> None:
        """Presence never goes backwards: a newer state for a held topic replaces the older one."""
        self.link.room_left = 0
        self.states.publish("cp/A", b"connected", 1)
        self.states.publish("cp/B", b"connected", 1)
        self.states.publish("cp/A", b"disconnected", 1)
        self.link.give_room(10)
        self.assertEqual(self.sent(), [("cp/B", b"connected"), ("cp/A", b"disconnected")])

    def test_nothing_overtakes_what_waits(self) -> None:
        """While states wait, a new one waits behind them even if the link has room right now."""
        self.link.room_left = 0
        self.states.publish("cp/A", b"disconnected", 1)
        self.link.room_left = 5  # acknowledgements arrived, the observers not told yet
        self.states.publish("cp/B", b"connected", 1)
        self.assertEqual(self.sent(), [])
        self.link.give_room(0)
        self.assertEqual([t for t, _ in self.sent()], ["cp/A", "cp/B"])

    def test_refused_publish_is_kept(self) -> None:
        """A link that refuses despite its room (stopping) leaves the state waiting, not lost."""
        self.link.refuse_publishes = True
        self.states.publish("cp/A", b"connected", 1)
        self.assertEqual(len(self.states), 1)
        self.link.refuse_publishes = False
        self.link.give_room(1)
        self.assertEqual(self.sent(), [("cp/A", b"connected")])
