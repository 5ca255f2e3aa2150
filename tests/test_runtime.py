"""ocppgw.runtime: the event-loop lag monitor and the garbage-collection policy."""

from __future__ import annotations

import gc

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.metrics import Metrics
from ocppgw.runtime import GcPolicy, LagMonitor, RuntimeService


def histogram_count(metrics: Metrics, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for metric in metrics.registry.collect()
        for sample in metric.samples
        if sample.name == f"ocppgw_{name}_count" and all(sample.labels.get(k) == v for k, v in labels.items())
    )


class LagMonitorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.monitor = LagMonitor(self.clock, self.metrics)
        self.monitor.start()
        self.addCleanup(self.monitor.stop)

    def test_on_time_is_no_lag(self) -> None:
        """Ticks that fire when due record 0 lag."""
        for _ in range(10):
            self.clock.advance(LagMonitor.tick)
        self.assertEqual(histogram_count(self.metrics, "event_loop_lag_seconds"), 10)
        self.assertEqual(self.metrics.value("event_loop_lag_max_seconds"), 0.0)

    def test_a_stall_is_the_worst_lag_for_a_minute(self) -> None:
        """A reactor busy for 0.6 s makes the tick 0.55 s late; the gauge says so for a minute."""
        self.clock.advance(0.6)
        self.assertAlmostEqual(self.metrics.value("event_loop_lag_max_seconds"), 0.55)
        for _ in range(int(50 / LagMonitor.tick)):
            self.clock.advance(LagMonitor.tick)
        self.assertAlmostEqual(self.metrics.value("event_loop_lag_max_seconds"), 0.55)
        for _ in range(int(11 / LagMonitor.tick)):
            self.clock.advance(LagMonitor.tick)
        self.assertEqual(self.metrics.value("event_loop_lag_max_seconds"), 0.0)

    def test_stop_cancels_the_timer(self) -> None:
        self.monitor.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class GcPolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = Metrics()
        self.policy = GcPolicy(self.clock, self.metrics)
        self.addCleanup(gc.unfreeze)  # this test process keeps collecting what it froze
        self.addCleanup(self.policy.stop)

    def test_freezes_at_start_and_every_interval(self) -> None:
        """What is alive at start is frozen; what is made later is frozen at the next interval."""
        gc.unfreeze()
        self.policy.start()
        frozen = gc.get_freeze_count()
        self.assertGreater(frozen, 0)
        later = [[n] for n in range(1000)]  # tracked objects, alive
        self.clock.advance(GcPolicy.freeze_interval)
        self.assertGreaterEqual(gc.get_freeze_count(), frozen + len(later))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_collections_timed_by_generation(self) -> None:
        """Each collection's pause is observed, labelled with its generation."""
        self.policy.start()
        before = histogram_count(self.metrics, "gc_pause_seconds", generation="2")
        gc.collect()
        self.assertEqual(histogram_count(self.metrics, "gc_pause_seconds", generation="2"), before + 1)
        self.policy.stop()
        gc.collect()
        self.assertEqual(histogram_count(self.metrics, "gc_pause_seconds", generation="2"), before + 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RuntimeServiceTests(SynchronousTestCase):
    def test_lag_monitor_runs_while_started(self) -> None:
        """Without the policy only the lag monitor runs; stopping leaves no timer."""
        clock = Clock()
        service = RuntimeService(clock, Metrics(), gc_policy=False)
        service.startService()
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])
