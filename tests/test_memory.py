"""ocppgw.memory: the gateway-wide receive budget and the rate-limited malloc_trim."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from ocppgw.memory import InflightBudget, MemoryTrimmer, glibc_malloc_trim
from ocppgw.metrics import Metrics

MB = 1024 * 1024


class TrimmerTests(TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: list[float] = []
        self.metrics = Metrics()
        self.trimmer = MemoryTrimmer(self.clock, self.record, self.metrics)

    def record(self) -> None:
        self.calls.append(self.clock.seconds())

    def test_small_buffers_never_trim(self) -> None:
        """Buffers under 64 KB do not count, however many: the allocator reuses them."""
        for _ in range(10000):
            self.trimmer.released(60 * 1024)
        self.clock.advance(10)
        self.assertEqual(self.calls, [])

    def test_trims_after_the_threshold_once_the_turn_is_over(self) -> None:
        """4 MB of large buffers released: one trim, on the next reactor turn, counted."""
        self.trimmer.released(3 * MB)
        self.clock.advance(0)
        self.assertEqual(self.calls, [])
        self.trimmer.released(MB)
        self.assertEqual(self.calls, [])  # not inside the caller's stack
        self.clock.advance(0)
        self.assertEqual(self.calls, [0.0])
        self.assertEqual(self.metrics.total("memory_trims"), 1)

    def test_at_most_once_per_interval(self) -> None:
        """A burst releasing 100 MB in 2.5 s trims at 0, 1, 2, once more at 3 (its tail), and 3 s after
        the last release (what was freed after it was handed on)."""
        for _ in range(250):
            self.clock.advance(0.01)
            self.trimmer.released(400 * 1024)
        self.clock.pump([0.01] * 500)
        self.assertEqual([round(t, 1) for t in self.calls], [0.1, 1.1, 2.1, 3.1, 5.5])

    def test_one_large_release_trimmed_once_settled(self) -> None:
        """A single 1 MB buffer (under the threshold) is trimmed for 3 s after its release."""
        self.trimmer.released(MB)
        self.clock.advance(2.9)
        self.assertEqual(self.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(self.calls, [3.0])

    def test_stop_forgets_a_scheduled_trim(self) -> None:
        """stop() cancels a pending trim (the gateway is stopping)."""
        self.trimmer.released(8 * MB)
        self.clock.advance(0)
        self.trimmer.released(8 * MB)
        self.trimmer.stop()
        self.clock.advance(5)
        self.assertEqual(len(self.calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_without_glibc_nothing_happens(self) -> None:
        """A C library without malloc_trim: the trimmer is unavailable and schedules nothing."""
        trimmer = MemoryTrimmer(self.clock, None)
        trimmer._trim = None
        trimmer.released(64 * MB)
        self.assertFalse(trimmer.available)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_failing_trim_is_given_up(self) -> None:
        """A trim that raises is logged once and not tried again."""

        def broken() -> None:
            raise OSError("no")

        trimmer = MemoryTrimmer(self.clock, broken)
        trimmer.released(8 * MB)
        self.clock.advance(0)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertFalse(trimmer.available)

    def test_glibc_trim_runs_here(self) -> None:
        """On this (glibc) machine the real malloc_trim(0) is found and callable."""
        trim = glibc_malloc_trim()
        assert trim is not None
        self.assertIn(trim(), (0, 1))


class BudgetTests(TestCase):
    def test_reserve_up_to_the_limit(self) -> None:
        """Reservations succeed up to the limit exactly; past it nothing is counted."""
        budget = InflightBudget(1000)
        self.assertTrue(budget.reserve(700))
        self.assertFalse(budget.reserve(301))
        self.assertEqual(budget.used, 700)
        self.assertTrue(budget.reserve(300))
        budget.release(1000)
        self.assertEqual(budget.used, 0)

    def test_release_tells_the_trimmer(self) -> None:
        """What is released goes to the trimmer, which decides whether it is worth a trim."""
        clock = Clock()
        calls: list[int] = []
        budget = InflightBudget(64 * MB, MemoryTrimmer(clock, lambda: calls.append(1)))
        for _ in range(5):
            self.assertTrue(budget.reserve(MB))
            budget.release(MB)
        clock.advance(0)
        self.assertEqual(calls, [1])
