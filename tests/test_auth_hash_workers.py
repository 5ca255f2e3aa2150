"""``ocppgw.auth.hash_workers`` and ``HashingPool``: bcrypt and pbkdf2 in low-priority processes
driven from the reactor; the queue, the deadlines and the deaths on a fake reactor, then real ones."""

from __future__ import annotations

import io
import os
import pickle
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, inlineCallbacks
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ocppgw.auth import hash_workers, hashing
from ocppgw.auth.hash_child import serve
from ocppgw.auth.hash_workers import HEADER, HashingProcessDied, HashWorkers
from ocppgw.auth.hashing import HashingError, HashingPool, HashSettings
from ocppgw.auth.idle_group import GROUP_NAME
from ocppgw.auth.pool import Expired, Overloaded
from tests.test_auth_hashing import VECTORS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeProcess:
    """The transport ``spawnProcess`` gives: what was written, closed and signalled."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written = b""
        self.stdin_closed = False
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def jobs(self) -> list[tuple[Any, tuple[Any, ...]]]:
        """Every job written so far, unpickled."""
        found, data = [], self.written
        while data:
            (length,) = HEADER.unpack_from(data)
            found.append(pickle.loads(data[HEADER.size : HEADER.size + length]))
            data = data[HEADER.size + length :]
        return found


class FakeReactor(Clock):
    """A Clock whose ``spawnProcess`` records the protocol instead of starting anything."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, FakeProcess, list[str]]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], **kwargs: Any) -> FakeProcess:
        transport = FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(transport)
        self.spawned.append((protocol, transport, args))
        return transport


def answer(protocol: Any, value: object, ok: bool = True) -> None:
    """The process answers its job, in two chunks (a pipe may split it anywhere)."""
    data = pickle.dumps((ok, value))
    framed = HEADER.pack(len(data)) + data
    protocol.childDataReceived(1, framed[:3])
    protocol.childDataReceived(1, framed[3:])


def end(protocol: Any, crashed: bool = True) -> None:
    protocol.processEnded(Failure(ProcessTerminated(signal=9) if crashed else ProcessDone(0)))


def restore_pythonpath(old: str | None) -> None:
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def double(x: int) -> int:
    return 2 * x


class QueueTests(SynchronousTestCase):
    """Queueing, shedding and deaths, on a fake reactor (no process is started)."""

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.workers = HashWorkers(self.reactor, 1, max_queued=2)
        self.workers.start()
        self.protocol, self.transport, self.argv = self.reactor.spawned[0]

    def test_spawns_the_child_module(self) -> None:
        """One process per slot, running ``ocppgw.auth.hash_child`` with this interpreter."""
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(self.argv[1:], ["-m", "ocppgw.auth.hash_child"])

    def test_one_job_at_a_time_in_order(self) -> None:
        """The second job is written only once the first is answered, and before its callbacks run."""
        first = self.workers.run(5.0, double, 1)
        second = self.workers.run(5.0, double, 2)
        self.assertEqual(self.transport.jobs(), [(double, (1,))])
        self.assertEqual(self.workers.waiting, 1)
        seen: list[int] = []
        first.addCallback(lambda value: seen.append((value, len(self.transport.jobs()))))
        answer(self.protocol, 2)
        self.assertEqual(seen, [(2, 2)])
        answer(self.protocol, 4)
        self.assertEqual(self.successResultOf(second), 4)

    def test_exception_comes_back(self) -> None:
        """An exception the job raised fails its Deferred with that exception."""
        d = self.workers.run(5.0, double, 1)
        answer(self.protocol, HashingError("bad hash"), ok=False)
        self.assertEqual(str(self.failureResultOf(d, HashingError).value), "bad hash")

    def test_full_queue_refuses_at_once(self) -> None:
        """Past ``max_queued`` waiting jobs a new one fails at once with Overloaded."""
        self.workers.run(5.0, double, 1)  # running
        self.workers.run(5.0, double, 2)
        self.workers.run(5.0, double, 3)
        self.failureResultOf(self.workers.run(5.0, double, 4), Overloaded)

    def test_late_job_is_skipped(self) -> None:
        """A job that can no longer finish before its handshake's deadline when a process is free for
        it is never sent; it fails with Expired at that deadline, not in the answering turn."""
        self.workers.run(5.0, double, 1)
        late = self.workers.run(5.0, double, 2)
        self.reactor.advance(4.9)
        answer(self.protocol, 2)  # a job typically takes 4.9 / 8 s now: too long for the 0.1 s left
        self.assertNoResult(late)
        self.assertEqual(len(self.transport.jobs()), 1)
        self.reactor.advance(0.1)
        self.failureResultOf(late, Expired)
        self.assertEqual(len(self.transport.jobs()), 1)

    def test_cancelled_job_leaves_the_queue(self) -> None:
        """A handshake's timeout cancels its job: a queued one is never sent, a running one's answer
        is dropped."""
        running = self.workers.run(5.0, double, 1)
        queued = self.workers.run(5.0, double, 2)
        queued.cancel()
        running.cancel()
        self.assertEqual(self.workers.waiting, 0)
        answer(self.protocol, 2)
        self.assertEqual(len(self.transport.jobs()), 1)
        self.failureResultOf(running, CancelledError)
        self.failureResultOf(queued, CancelledError)

    def test_death_retries_once_in_a_new_process(self) -> None:
        """A process that dies during a job is replaced and the job sent again; a second death fails
        it with HashingProcessDied."""
        answer_later = self.workers.run(5.0, double, 1)
        answer(self.protocol, 2)  # this process has answered: replaced at once when it dies
        self.successResultOf(answer_later)
        d = self.workers.run(5.0, double, 3)
        end(self.protocol)
        second, transport, _ = self.reactor.spawned[1]
        self.assertEqual(transport.jobs(), [(double, (3,))])
        end(second)
        self.failureResultOf(d, HashingProcessDied)

    def test_processes_that_die_at_once_back_off(self) -> None:
        """A process that ends before answering anything (a broken install) is respawned after a
        growing delay, not in a busy loop."""
        end(self.protocol)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 2)
        end(self.reactor.spawned[1][0])
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 3)

    def test_garbage_ends_the_process(self) -> None:
        """An answer nobody asked for, or an oversized one, kills the process."""
        self.protocol.childDataReceived(1, HEADER.pack(10) + b"x" * 10)
        self.assertEqual(self.transport.signals, ["KILL"])

    def test_stop(self) -> None:
        """Stop fails the queued jobs and refuses new ones, closes each process's input and fires
        when they have ended; one that does not end in time is killed."""
        running = self.workers.run(5.0, double, 1)
        queued = self.workers.run(5.0, double, 2)
        stopped = self.workers.stop()
        self.failureResultOf(queued, Overloaded)
        self.failureResultOf(self.workers.run(5.0, double, 3), Overloaded)
        self.assertTrue(self.transport.stdin_closed)
        self.assertNoResult(stopped)
        self.reactor.advance(hash_workers.STOP_GRACE)
        self.assertEqual(self.transport.signals, ["KILL"])
        end(self.protocol)
        self.successResultOf(stopped)
        self.failureResultOf(running, HashingProcessDied)
        self.assertEqual(len(self.reactor.spawned), 1)  # not replaced


class FakeGroup:
    """An idle group that records who joined, and what each had been sent by then."""

    def __init__(self, transports: dict[int, FakeProcess], fail: bool = False) -> None:
        self.path = "/cgroup/ocppgw-hashing"
        self.transports = transports
        self.fail = fail
        self.joined: list[tuple[int, bytes]] = []
        self.removed = False

    def join(self, pid: int) -> None:
        if self.fail:
            raise PermissionError(13, "Permission denied")
        self.joined.append((pid, self.transports[pid].written if pid in self.transports else b""))

    def remove(self) -> None:
        self.removed = True


class IdleGroupTests(SynchronousTestCase):
    """The hashing processes and their idle CPU group (``ocppgw.auth.idle_group``), on a fake reactor."""

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def workers(self, group: Any, why: str = "/cgroup/x") -> tuple[FakeReactor, HashWorkers]:
        reactor = FakeReactor()
        workers = HashWorkers(reactor, 2, max_queued=4, idle_group=lambda: (group, why))
        workers.start()
        return reactor, workers

    def texts(self) -> list[str]:
        return [formatEvent(e) for e in self.events if e.get("log_namespace") == hash_workers.__name__]

    def test_each_process_joins_before_its_first_job(self) -> None:
        """Every process spawned, a replacement too, joins the group before anything is written to it;
        the group is removed once the processes have ended on stop."""
        transports: dict[int, FakeProcess] = {}
        group = FakeGroup(transports)
        reactor = FakeReactor()
        spawn = reactor.spawnProcess

        def recording(protocol: Any, executable: str, args: list[str], **kwargs: Any) -> FakeProcess:
            transport = spawn(protocol, executable, args, **kwargs)
            transports[transport.pid] = transport
            return transport

        reactor.spawnProcess = recording  # type: ignore[method-assign]
        workers = HashWorkers(reactor, 2, max_queued=4, idle_group=lambda: (group, "/cgroup/x"))
        workers.start()
        job = workers.run(5.0, double, 1)
        busy = next(p for p, t, _ in reactor.spawned if t.written)
        end(busy)  # dies with the job: replaced (after a back-off), the job retried there
        reactor.advance(1.0)
        self.assertEqual(group.joined, [(1000, b""), (1001, b""), (1002, b"")])
        self.assertEqual(len(transports[1002].jobs()), 1)
        stopped = workers.stop()
        self.assertFalse(group.removed)
        for protocol, _, _ in reactor.spawned:
            if protocol is not busy:
                end(protocol, crashed=False)
        self.successResultOf(stopped)
        self.failureResultOf(job, HashingProcessDied)  # its second process ended on stop, unanswered
        self.assertTrue(group.removed)

    def test_start_up_line(self) -> None:
        """One line at start says where the processes run, or why not in an idle group."""
        self.workers(FakeGroup({}))
        self.assertEqual(self.texts(), ["hashing processes run at idle CPU priority, in /cgroup/x"])
        self.workers(None, "no cgroup holds the cpu controller")
        self.assertEqual(
            self.texts()[-1],
            f"hashing processes run at nice {hash_workers.NICE}, without an idle CPU group:"
            " no cgroup holds the cpu controller",
        )

    def test_refused_join_leaves_the_process_working(self) -> None:
        """A process the group refuses still hashes (at nice 10); each refusal is logged."""
        reactor, workers = self.workers(FakeGroup({}, fail=True))
        self.assertEqual(len(self.texts()), 3)
        self.assertIn("could not join /cgroup/ocppgw-hashing: Permission denied", self.texts()[1])
        result = workers.run(5.0, double, 4)
        answer(next(p for p, t, _ in reactor.spawned if t.written), 8)
        self.assertEqual(self.successResultOf(result), 8)


class ChildTests(SynchronousTestCase):
    def test_serve(self) -> None:
        """The child answers each framed job in order, an exception included, until its input ends."""
        pickles = (pickle.dumps((double, (4,))), pickle.dumps((int, ("x",))))
        jobs = b"".join(HEADER.pack(len(data)) + data for data in pickles)
        out = io.BytesIO()
        serve(io.BytesIO(jobs), out)
        answers, data = [], out.getvalue()
        while data:
            (length,) = HEADER.unpack_from(data)
            answers.append(pickle.loads(data[HEADER.size : HEADER.size + length]))
            data = data[HEADER.size + length :]
        self.assertEqual(answers[0], (True, 8))
        self.assertEqual(answers[1][0], False)
        self.assertIsInstance(answers[1][1], ValueError)


class HashingPoolTests(TestCase):
    """Real hashing processes."""

    def setUp(self) -> None:
        old = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = ROOT  # the children import this module for _where
        self.addCleanup(restore_pythonpath, old)

    def pool(self, settings: HashSettings, timeout: float = 5.0, priority: str = "idle") -> HashingPool:
        pool = HashingPool(settings, reactor, timeout, priority)
        pool.start()
        self.addCleanup(pool.stop)
        return pool

    @inlineCallbacks
    def test_expensive_in_low_priority_processes(self) -> Any:
        """bcrypt and pbkdf2 run in processes of their own (the A.9 vectors still check there), each
        in a session and autogroup of its own at a lower priority, so a storm of them yields the cores."""
        for row in ("19", "20"):
            _, settings, password, salt, stored = next(v for v in VECTORS if v[0] == row)
            pool = self.pool(settings)
            self.assertTrue((yield pool.check(stored, salt, password)))
            self.assertFalse((yield pool.check(stored, salt, password + b"x")))
            assert pool.workers is not None
            where = yield pool.workers.run(5.0, _where)
            self.assertIn(where["pid"], pool.workers.pids())
            self.assertNotEqual(where["sid"], os.getsid(0))
            self.assertEqual(where["nice"], hash_workers.NICE)
            if os.path.exists("/proc/self/autogroup"):
                self.assertIn(f"nice {hash_workers.NICE}", where["autogroup"])
            # these machines run as root on cgroup v1 (tests/test_auth_idle_group.py, MachineTests)
            self.assertIn(f"/{GROUP_NAME}\n", where["cgroup"])

    @inlineCallbacks
    def test_low_priority_without_idle_group(self) -> Any:
        """``hashing_priority = low``: the processes stay at nice 10 out of the idle group (where this
        machine would give one), and the start-up line says so."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pool = self.pool(HashSettings("bcrypt", salt_rounds=4), priority="low")
        assert pool.workers is not None
        where = yield pool.workers.run(5.0, _where)
        self.assertEqual(where["nice"], hash_workers.NICE)
        self.assertNotIn(GROUP_NAME, where["cgroup"])
        self.assertIn(
            f"hashing processes run at nice {hash_workers.NICE}, without an idle CPU group:"
            " [authentication] hashing_priority = low",
            [formatEvent(e) for e in events],
        )

    @inlineCallbacks
    def test_dead_process_is_replaced(self) -> Any:
        """A hashing process killed between jobs is replaced; the next check still answers."""
        pool = self.pool(HashSettings("bcrypt", salt_rounds=4))
        stored, salt = yield pool.generate(b"pw")
        assert pool.workers is not None
        pids = pool.workers.pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        self.assertTrue((yield pool.check(stored, salt, b"pw")))
        self.assertFalse(set(pool.workers.pids()) & set(pids))

    @inlineCallbacks
    def test_stop_ends_the_processes(self) -> Any:
        """Stopping the pool waits for the hashing processes to exit."""
        pool = HashingPool(HashSettings("bcrypt", salt_rounds=4), reactor, 5.0)
        pool.start()
        assert pool.workers is not None
        yield pool.generate(b"pw")
        pids = pool.workers.pids()
        yield pool.stop()
        for pid in pids:
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, 0)

    def test_cheap_inline(self) -> None:
        """sha256 answers at once, in the calling thread, with no hashing process."""
        _, settings, password, salt, stored = VECTORS[11]
        pool = HashingPool(settings, reactor, 5.0)
        pool.start()
        self.assertIsNone(pool.workers)
        self.assertTrue(self.successResultOf(pool.check(stored, salt, password)))
        self.failureResultOf(pool.check(None, salt, password), HashingError)
        self.assertEqual(len(self.successResultOf(pool.generate(b"pw"))), 2)
        self.successResultOf(pool.stop())

    @inlineCallbacks
    def test_errors_come_back_as_failures(self) -> Any:
        """A bcrypt hash that cannot be checked fails the Deferred with HashingError."""
        pool = self.pool(HashSettings("bcrypt"))
        with self.assertRaises(HashingError):
            yield pool.check("salt", None, b"pw")
        stored, salt = yield pool.generate(b"pw")
        self.assertTrue((yield pool.check(stored, salt, b"pw")))

    @inlineCallbacks
    def test_stop_twice(self) -> Any:
        """Stopping a started pool fires; stopping a never started one fires at once."""
        pool = HashingPool(HashSettings("bcrypt"), reactor, 5.0)
        yield pool.stop()
        pool.start()
        yield pool.stop()
        assert pool.workers is not None
        self.assertFalse(pool.workers.started)
        self.assertEqual(pool.workers.pids(), [])

    def test_fewer_processes_than_cores(self) -> None:
        """The hashing processes leave a core to the reactor: cores - 1, at least one."""
        for cores, processes in ((None, 1), (1, 1), (2, 1), (8, 7)):
            self.patch(hashing.os, "cpu_count", lambda cores=cores: cores)
            self.assertEqual(hashing.hashing_processes(), processes)


def _where() -> dict[str, Any]:
    """Where a hashing process runs: its ids and priority (called in that process)."""
    try:
        with open("/proc/self/autogroup") as f:
            autogroup = f.read()
    except OSError:
        autogroup = ""
    with open("/proc/self/cgroup") as f:
        cgroup = f.read()
    ids = {"pid": os.getpid(), "sid": os.getsid(0), "nice": os.nice(0)}
    return {**ids, "autogroup": autogroup, "cgroup": cgroup}

