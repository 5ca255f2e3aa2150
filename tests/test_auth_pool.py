"""``ocppgw.auth.pool.BlockingPool``: the one thread pool of every backend sheds work it cannot finish
in time and refuses work past its queue bound."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from ocppgw.auth import pool as pool_module
from ocppgw.auth.pool import BlockingPool, Expired, Overloaded


class BlockingPoolTests(TestCase):
    def started(self, **options: Any) -> BlockingPool:
        pool = BlockingPool(reactor, "test-pool", 1, **options)
        pool.start()
        self.addCleanup(pool.stop)
        return pool

    @inlineCallbacks
    def test_queue_bound_refuses_at_once(self) -> Any:
        """Past ``max_queued`` waiting jobs a new one fails with Overloaded at once (not queued, not
        run); once the queue drains, jobs are taken again."""
        pool = self.started(max_queued=2)
        release = threading.Event()
        running = threading.Event()
        busy = pool.run(60.0, lambda: running.set() or release.wait(60.0))
        yield from_thread_event(running)
        queued = [pool.run(60.0, lambda i=i: i) for i in range(2)]
        refused = pool.run(60.0, lambda: "ran")
        self.failureResultOf(refused, Overloaded)
        self.assertEqual(pool.waiting, 2)
        release.set()
        self.assertEqual((yield gatherResults([busy, *queued])), [True, 0, 1])
        self.assertEqual((yield pool.run(60.0, lambda: "again")), "again")

    @inlineCallbacks
    def test_job_too_late_to_finish_is_skipped(self) -> Any:
        """A job is skipped when less of its time is left than a job typically takes here, even if
        its deadline has not passed yet: it could only answer a handshake already answered."""
        now = [0.0]
        self.patch(pool_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
        pool = self.started()

        def slow() -> str:
            now[0] += 1.0  # each job "takes" a second
            return "done"

        for _ in range(20):
            yield pool.run(10.0, slow)
        release = threading.Event()
        blocker = pool.run(60.0, release.wait, 60.0)
        late = pool.run(10.0, slow)
        now[0] += 9.5  # 0.5 s left when a worker is free; a job takes ~1 s
        release.set()
        yield blocker
        with self.assertRaises(Expired):
            yield late
        self.assertEqual((yield pool.run(10.0, slow)), "done")

    @inlineCallbacks
    def test_slow_spell_cannot_lock_jobs_out(self) -> Any:
        """After jobs that took far longer than the timeout, a fresh job still runs: the margin is
        at most half the timeout."""
        now = [0.0]
        self.patch(pool_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
        pool = self.started()

        def hang() -> None:
            now[0] += 100.0

        for _ in range(10):
            yield pool.run(1000.0, hang)
        self.assertEqual((yield pool.run(4.0, lambda: "ran")), "ran")

    @inlineCallbacks
    def test_stop_waits_for_the_last_job(self) -> Any:
        """Stop fires once the running job has finished, without blocking the reactor; a pool that
        never started stops at once."""
        pool = self.started()
        release = threading.Event()
        running = pool.run(60.0, release.wait, 60.0)
        stopped = pool.stop()
        self.assertNoResult(stopped)
        release.set()
        yield running
        yield stopped
        self.assertFalse(pool.started)
        self.successResultOf(BlockingPool(reactor, "idle", 1).stop())


def from_thread_event(event: threading.Event) -> Any:
    """A Deferred fired once ``event`` is set in another thread (waits in a thread of its own)."""
    return pool_module.in_own_thread(reactor, lambda: event.wait(60.0))
