"""Tests for ocppgw.auth.builtin and ocppgw.auth.users: the built-in database's decisions and store."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ocppgw.auth import builtin
from ocppgw.auth.hashing import HashingPool, HashSettings, generate
from ocppgw.auth.user_table import UserTable
from ocppgw.auth.users import ImportCounts, User, UserExists, UserStore
from ocppgw.config import AuthenticationSection
from ocppgw.core.ports import Credentials, Decision, Outcome


def credentials(
    cid: str = "CP001", username: str | None = "CP001", password: bytes | None = b"pw"
) -> Credentials:
    return Credentials(cid, "10.0.0.5:4000", "ws.default", username, password)


def add(
    store: UserStore, settings: HashSettings, user_id: str, password: bytes, superuser: bool = False
) -> None:
    password_hash, salt = generate(settings, password)
    store.add(User(user_id, password_hash, salt, superuser))


class AuthenticateTests(TestCase):
    def make(self, **fields: Any) -> tuple[builtin.BuiltinAuthenticator, UserStore]:
        data_dir = Path(self.mktemp())
        section = AuthenticationSection(backend="built_in_database", **fields)
        authenticator = builtin.make(section, reactor, data_dir)
        authenticator.start()
        self.addCleanup(authenticator.stop)
        store = UserStore(data_dir)  # as the CLI: another connection to the same file
        self.addCleanup(store.close)
        return authenticator, store

    @inlineCallbacks
    def test_reference_semantics(self) -> Any:
        """Right password: allow with is_superuser; wrong: deny bad_username_or_password; unknown user
        or no password: ignore."""
        authenticator, store = self.make(salt_position="suffix")
        settings = HashSettings("sha256", "suffix")
        add(store, settings, "CP001", b"pw")
        add(store, settings, "admin", b"root", superuser=True)
        self.assertEqual((yield authenticator.authenticate(credentials())), Decision.allow(False))
        self.assertEqual(
            (yield authenticator.authenticate(credentials("X", "admin", b"root"))), Decision.allow(True)
        )
        wrong = yield authenticator.authenticate(credentials(password=b"PW"))
        self.assertEqual(wrong, Decision.deny("bad_username_or_password"))
        self.assertEqual((yield authenticator.authenticate(credentials(username="CP002"))), Decision.ignore())
        self.assertEqual((yield authenticator.authenticate(credentials(password=None))), Decision.ignore())
        self.assertEqual((yield authenticator.authenticate(credentials(username=None))), Decision.ignore())

    @inlineCallbacks
    def test_clientid(self) -> Any:
        """``user_id_type = clientid``: the charge point id is the user id, whatever the username."""
        authenticator, store = self.make(user_id_type="clientid")
        add(store, HashSettings(), "CP007", b"pw")
        self.assertTrue((yield authenticator.authenticate(credentials("CP007", None, b"pw"))).allowed)
        self.assertEqual((yield authenticator.authenticate(credentials("CP008", "CP007"))), Decision.ignore())

    @inlineCallbacks
    def test_user_added_later_is_seen(self) -> Any:
        """A user written to the file after the first handshake counts at the next one."""
        authenticator, store = self.make(password_hash_algorithm="bcrypt", salt_rounds=5)
        self.assertEqual((yield authenticator.authenticate(credentials())), Decision.ignore())
        add(store, HashSettings("bcrypt", salt_rounds=5), "CP001", b"pw")
        self.assertTrue((yield authenticator.authenticate(credentials())).allowed)
        store.delete("CP001")
        self.assertEqual((yield authenticator.authenticate(credentials())), Decision.ignore())

    @inlineCallbacks
    def test_unusable_record_is_unavailable(self) -> Any:
        """A stored salt that is absent (NULL) with suffix cannot be checked: unavailable, not a deny."""
        authenticator, store = self.make(salt_position="suffix")
        store.add(User("CP001", "00", None, False))
        decision = yield authenticator.authenticate(credentials())
        self.assertIs(decision.outcome, Outcome.UNAVAILABLE)
        self.assertIn("cannot be checked", decision.reason)
        self.assertNotIn("pw", decision.reason.replace("password", ""))

    @inlineCallbacks
    def test_unreadable_database_is_unavailable(self) -> Any:
        """A data_dir that cannot hold the file gives unavailable, never a failed Deferred."""
        blocker = Path(self.mktemp())
        blocker.write_text("a file, not a directory", encoding="ascii")
        authenticator = builtin.make(AuthenticationSection(backend="built_in_database"), reactor, blocker)
        authenticator.start()
        self.addCleanup(authenticator.stop)
        decision = yield authenticator.authenticate(credentials())
        self.assertIs(decision.outcome, Outcome.UNAVAILABLE)

    @inlineCallbacks
    def test_username_not_utf8(self) -> Any:
        """A Basic-auth name that is not UTF-8 (surrogate-escaped) cannot be a stored user: ignore."""
        authenticator, _store = self.make()
        self.assertEqual(
            (yield authenticator.authenticate(credentials(username="\udcff"))), Decision.ignore()
        )


class _Stalled:
    """A users pool that never answers."""

    def start(self) -> None:
        pass

    def run(self, *_args: Any) -> Deferred[Any]:
        return Deferred()


class TimeoutTests(SynchronousTestCase):
    def test_no_answer_within_request_timeout(self) -> None:
        """A lookup that does not come back within request_timeout is unavailable, at that moment."""
        clock = Clock()
        table = UserTable(UserStore(Path(self.mktemp())), _Stalled(), 2.0)  # type: ignore[arg-type]
        hashing = HashingPool(HashSettings(), clock, 2.0)
        authenticator = builtin.BuiltinAuthenticator(table, hashing, clock, timeout=2.0)
        decision = authenticator.authenticate(credentials())
        clock.advance(1.9)
        self.assertNoResult(decision)
        clock.advance(0.1)
        result = self.successResultOf(decision)
        self.assertEqual(result, Decision.unavailable("built_in_database: no answer within 2s"))


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = Path(self.mktemp())
        self.store = UserStore(self.directory)
        self.addCleanup(self.store.close)

    def test_wal_and_file(self) -> None:
        """The file is data_dir/users.sqlite, created with its directory, in WAL mode."""
        self.store.add(User("a", "h", "s", False))
        self.assertEqual(self.store.path, self.directory / "users.sqlite")
        with sqlite3.connect(self.store.path) as connection:
            self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_add_get_list_delete(self) -> None:
        """Users are added once, found, listed by id and deleted."""
        self.store.add(User("b", "h2", None, True))
        self.store.add(User("a", "h1", "s1", False))
        self.assertRaises(UserExists, self.store.add, User("a", "x", "y", False))
        self.assertEqual(self.store.get("b"), User("b", "h2", None, True))
        self.assertEqual([user.user_id for user in self.store.list()], ["a", "b"])
        self.assertTrue(self.store.delete("a"))
        self.assertFalse(self.store.delete("a"))
        self.assertIsNone(self.store.get("a"))

    def test_import_counts(self) -> None:
        """new: success; identical: skipped; different: override; None: failed; the last duplicate wins."""
        self.store.add(User("same", "h", "s", False))
        self.store.add(User("changed", "h", "s", False))
        counts = self.store.import_users(
            [
                User("new", "h", "s", False),
                User("same", "h", "s", False),
                User("changed", "h", "s", True),
                None,
                User("new", "h9", "s9", False),
            ]
        )
        self.assertEqual(counts, ImportCounts(total=5, success=1, override=2, skipped=1, failed=1))
        self.assertEqual(self.store.get("new"), User("new", "h9", "s9", False))
        self.assertTrue(self.store.get("changed").is_superuser)  # type: ignore[union-attr]

    def test_import_is_one_transaction(self) -> None:
        """An error part-way through an import leaves the table as it was."""

        def users() -> Any:
            yield User("first", "h", "s", False)
            raise RuntimeError("broken file")

        self.assertRaises(RuntimeError, self.store.import_users, users())
        self.assertEqual(self.store.list(), [])

    def test_repr_hides_hashes(self) -> None:
        """A user's repr shows neither hash nor salt."""
        self.assertEqual(repr(User("a", "HASH", "SALT", False)), "User(user_id='a', is_superuser=False)")
