"""What the database backends share: ``to_bool``, the record check, the timeout, the pool, the glue."""

from __future__ import annotations

import threading

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial import unittest

from ocppgw.auth.hashing import HashingError
from ocppgw.auth.lookup import Verify, bounded, decide, hashing_pool, server_address
from ocppgw.auth.pool import BlockingPool, Expired
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Decision, Outcome
from tests.support_lookup import SALT, fake_verify, section, sha256_suffix


class ServerAddressTests(unittest.TestCase):
    def test_forms(self) -> None:
        """host, host:port and [v6]:port, with the default port when none is given."""
        self.assertEqual(server_address("db", 5432), ("db", 5432))
        self.assertEqual(server_address("db:6000", 5432), ("db", 6000))
        self.assertEqual(server_address("[::1]:7000", 5432), ("::1", 7000))
        self.assertEqual(server_address("[::1]", 5432), ("::1", 5432))


class DecideTests(unittest.TestCase):
    def setUp(self) -> None:
        self.verify, self.calls = fake_verify()
        self.stored = sha256_suffix(b"secret")

    def decided(self, record: dict, password: bytes = b"secret") -> Decision:
        return self.successResultOf(decide(record, password, self.verify))

    def test_match_and_mismatch(self) -> None:
        """The right password allows, a wrong one is ``bad_username_or_password``."""
        record = {"password_hash": self.stored, "salt": SALT}
        self.assertEqual(self.decided(record), Decision.allow())
        self.assertEqual(self.decided(record, b"nope"), Decision.deny("bad_username_or_password"))

    def test_password_column_and_bytes(self) -> None:
        """``password`` is read when there is no ``password_hash``; bytes values (Redis) are text."""
        record = {"password": self.stored.encode(), "salt": SALT.encode(), "is_superuser": b"1"}
        self.assertEqual(self.decided(record), Decision.allow(is_superuser=True))

    def test_no_password_column(self) -> None:
        """Neither column, or NULL: deny ``not_authorized`` without a check."""
        self.assertEqual(self.decided({"salt": SALT}), Decision.deny("not_authorized"))
        self.assertEqual(self.decided({"password_hash": None}), Decision.deny("not_authorized"))
        self.assertEqual(self.calls, [])

    def test_salt_absent_and_null(self) -> None:
        """An absent salt is ``""``; a NULL one reaches the check as None (which fails for suffix)."""
        self.decided({"password_hash": sha256_suffix(b"secret", "")})
        self.assertEqual(self.calls[-1][1], "")
        failure = self.failureResultOf(
            decide({"password_hash": self.stored, "salt": None}, b"x", self.verify)
        )
        failure.trap(ValueError)

    def test_superuser(self) -> None:
        """``is_superuser`` 1, "1" and "true" make a superuser; "0" and absent do not."""
        base = {"password_hash": self.stored, "salt": SALT}
        for flag, expected in ((1, True), ("1", True), ("true", True), ("0", False), (None, False)):
            self.assertEqual(self.decided({**base, "is_superuser": flag}).is_superuser, expected, flag)

    def test_stored_hash_not_text(self) -> None:
        """A stored hash that is a number cannot be checked: an error, not a mismatch."""
        self.assertRaises(TypeError, decide, {"password_hash": 12}, b"secret", self.verify)


class BoundedTests(unittest.TestCase):
    def test_timeout_is_unavailable(self) -> None:
        """No answer within the timeout: UNAVAILABLE, at the timeout and not before."""
        clock = Clock()
        d = bounded(Deferred, 2.0, clock, "postgresql")
        clock.advance(1.9)
        self.assertNoResult(d)
        clock.advance(0.1)
        decision = self.successResultOf(d)
        self.assertEqual(
            (decision.outcome, decision.reason), (Outcome.UNAVAILABLE, "postgresql: no answer within 2s")
        )

    def test_error_is_unavailable_without_text(self) -> None:
        """A query error names its type only (its text may quote a bound password)."""

        class ProgrammingError(Exception):
            pass

        def fail() -> Deferred[Decision]:
            raise ProgrammingError("near 'secret'")

        decision = self.successResultOf(bounded(fail, 1.0, Clock(), "mysql"))
        self.assertEqual(decision, Decision.unavailable("mysql: ProgrammingError"))


class BlockingPoolTests(unittest.TestCase):
    @inlineCallbacks
    def test_runs_off_the_reactor_thread_and_expires(self) -> None:
        """Work runs in the pool's thread; a job that waited past its timeout is not run."""
        pool = BlockingPool(reactor, "test-pool", 1)
        pool.start()
        self.addCleanup(pool.stop)
        name = yield pool.run(5.0, lambda: threading.current_thread().name)
        self.assertNotEqual(name, threading.current_thread().name)
        ran = []
        with self.assertRaises(Expired):
            yield pool.run(-1.0, ran.append, 1)
        self.assertEqual(ran, [])


class HashingPoolOfSectionTests(unittest.TestCase):
    """``hashing_pool`` checks with the real ``ocppgw.auth.hashing.check`` and the section's settings."""

    def started(self, settings: AuthenticationSection) -> Verify:
        pool = hashing_pool(settings, reactor)
        pool.start()
        self.addCleanup(pool.stop)
        return pool.check

    @inlineCallbacks
    def test_glue(self) -> None:
        """A.9 row 12 (sha256, suffix) matches and a wrong password does not; a NULL salt where the
        algorithm needs one fails (the backends answer unavailable); bcrypt ignores the salt column."""
        settings = section("mysql", password_hash_algorithm="sha256", salt_position="suffix")
        verify = self.started(settings)
        stored = "7a37b85c8918eac19a9089c0fa5a2ab4dce3f90528dcdeec108b23ddf3607b99"
        self.assertTrue((yield verify(stored, "salt", b"password")))
        self.assertFalse((yield verify(stored, "salt", b"wrongpass")))
        with self.assertRaises(HashingError):
            yield verify(stored, None, b"password")
        unsalted = self.started(section("mysql", password_hash_algorithm="bcrypt"))
        bcrypt_hash = "$2b$12$wtY3h20mUjjmeaClpqZVveDWGlHzCGsvuThMlneGHA7wVeFYyns2u"
        self.assertTrue((yield unsalted(bcrypt_hash, None, b"bcrypt")))
