"""``ocppgw.auth.user_table``: the built-in database's table in memory, and how a change of
``users.sqlite`` by another connection or process is seen at the next handshake."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from ocppgw.auth.builtin import BuiltinAuthenticator
from ocppgw.auth.hashing import HashingPool, HashSettings, generate
from ocppgw.auth.pool import BlockingPool
from ocppgw.auth.user_table import UserTable
from ocppgw.auth.users import User, UserStore
from ocppgw.core.ports import Credentials, Decision

SETTINGS = HashSettings("sha256", "suffix")
ROOT = Path(__file__).resolve().parent.parent


def credentials(username: str = "CP001", password: bytes = b"pw") -> Credentials:
    return Credentials("CP001", "10.0.0.5:4000", "ws.default", username, password)


def user(user_id: str, password: bytes) -> User:
    password_hash, salt = generate(SETTINGS, password)
    return User(user_id, password_hash, salt, False)


class UserTableTests(TestCase):
    def setUp(self) -> None:
        self.data_dir = Path(self.mktemp())
        self.cli = UserStore(self.data_dir)  # another connection to the file, as the CLI's
        self.addCleanup(self.cli.close)
        self.cli.add(user("CP001", b"pw"))
        self.clock = Clock()  # the authenticator's timers only: none may be armed on the fast path
        users = BlockingPool(reactor, "test-users", 1)
        self.table = UserTable(UserStore(self.data_dir), users, 5.0)
        hashing = HashingPool(SETTINGS, reactor, 5.0)
        self.authenticator = BuiltinAuthenticator(self.table, hashing, self.clock)
        self.authenticator.start()
        self.addCleanup(self.authenticator.stop)

    def backdate(self) -> None:
        """Both files' mtimes 10 s back: what they are once the last write is well in the past."""
        past = time.time_ns() - 10_000_000_000
        for path in self.table.signature_paths():
            if os.path.exists(path):
                os.utime(path, ns=(past, past))

    @inlineCallbacks
    def settle(self) -> Any:
        """Backdate the files and let one refresh record them, as after a quiet spell."""
        self.backdate()
        yield self.table.refresh()
        self.assertIsNotNone(self.table.current())

    @inlineCallbacks
    def test_unchanged_file_answers_at_once_without_timer(self) -> Any:
        """With the file unchanged since it was confirmed, a decision is ready at once: no thread
        hop, no reload, no timer."""
        yield self.settle()
        reloads = self.table.reloads
        self.assertEqual(
            self.successResultOf(self.authenticator.authenticate(credentials())), Decision.allow()
        )
        wrong = self.successResultOf(self.authenticator.authenticate(credentials(password=b"PW")))
        self.assertEqual(wrong, Decision.deny("bad_username_or_password"))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.table.reloads, reloads)

    @inlineCallbacks
    def test_write_by_another_connection_seen_at_next_handshake(self) -> Any:
        """A user added, changed or deleted by another connection counts at the very next decision,
        though the table in memory was current a moment before."""
        yield self.settle()
        self.cli.add(user("CP002", b"two"))
        self.assertEqual(
            (yield self.authenticator.authenticate(credentials("CP002", b"two"))), Decision.allow()
        )
        yield self.settle()
        self.cli.import_users([user("CP002", b"new")])
        self.assertEqual(
            (yield self.authenticator.authenticate(credentials("CP002", b"two"))),
            Decision.deny("bad_username_or_password"),
        )
        yield self.settle()
        self.assertTrue(self.cli.delete("CP002"))
        self.assertEqual(
            (yield self.authenticator.authenticate(credentials("CP002", b"new"))), Decision.ignore()
        )

    @inlineCallbacks
    def test_write_by_another_process_seen_at_next_handshake(self) -> Any:
        """The same across processes (the CLI is one): a user added by another process is in at the
        next handshake, and out once that process deletes it."""
        yield self.settle()
        script = (
            "import sys; from pathlib import Path; from ocppgw.auth.users import User, UserStore\n"
            "store = UserStore(Path(sys.argv[1]))\n"
            "if sys.argv[2] == 'delete': store.delete('CP009')\n"
            "else: store.add(User('CP009', sys.argv[3], sys.argv[4]))\n"
            "store.close()\n"
        )
        new = user("CP009", b"nine")
        argv = [sys.executable, "-c", script, str(self.data_dir.resolve())]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        subprocess.run([*argv, "add", new.password_hash, str(new.salt)], check=True, timeout=60, env=env)
        self.assertEqual(
            (yield self.authenticator.authenticate(credentials("CP009", b"nine"))), Decision.allow()
        )
        yield self.settle()
        subprocess.run([*argv, "delete"], check=True, timeout=60, env=env)
        self.assertEqual(
            (yield self.authenticator.authenticate(credentials("CP009", b"nine"))), Decision.ignore()
        )

    @inlineCallbacks
    def test_recent_stat_is_not_trusted(self) -> Any:
        """Right after a write (mtime within RACY_NS), the stats are not trusted: every decision asks
        the users thread again, but the table is read again only when data_version moved."""
        self.cli.add(user("CP003", b"x"))
        yield self.table.refresh()
        self.assertIsNone(self.table.current())
        reloads = self.table.reloads
        yield self.table.refresh()
        self.assertIsNone(self.table.current())
        self.assertEqual(self.table.reloads, reloads)
        yield self.settle()
        self.assertEqual(self.table.reloads, reloads)

    @inlineCallbacks
    def test_refresh_answer_dropped_is_harmless(self) -> Any:
        """A refresh whose answer is dropped (its handshake timed out) leaves nothing stale: the
        next one still returns the table as committed."""
        yield self.settle()
        self.cli.add(user("CP004", b"four"))
        dropped = self.table.refresh()
        dropped.cancel()
        self.failureResultOf(dropped)
        table = yield self.table.refresh()
        self.assertIn("CP004", table)
