"""The built-in database's users: one SQLite file shared by the running gateway and ``ocppgw users``.

``<[gateway] data_dir>/users.sqlite`` in WAL mode, so the CLI writes while the gateway reads and a
user added is seen at the next handshake. Every call blocks: the gateway makes them in a thread
pool of its own (``ocppgw.auth.builtin``); each thread has its own connection.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

FILE_NAME = "users.sqlite"
_BUSY_TIMEOUT_MS = 5000  # a writer waits this long for another writer (the CLI and the gateway)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    salt TEXT,
    is_superuser INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID
"""


@dataclass(frozen=True, slots=True)
class User:
    """One stored user, as the reference keeps it; ``salt`` None is an absent salt (an empty CSV field)."""

    user_id: str
    password_hash: str = field(repr=False)
    salt: str | None = field(repr=False)
    is_superuser: bool = False


@dataclass
class ImportCounts:
    """The reference's import result: ``{"total", "success", "override", "skipped", "failed"}``."""

    total: int = 0
    success: int = 0
    override: int = 0
    skipped: int = 0
    failed: int = 0


class UserExists(Exception):
    """``add`` of a user id already stored."""


class UserStore:
    """The users table; connections are opened per thread, on first use, and closed by ``close``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            connection.isolation_level = None  # transactions are explicit
            connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            try:
                connection.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as e:
                # SQLite does not wait (busy_timeout) to switch a new file's journal mode while another
                # connection opens it too; that one switches it (the mode is kept in the file).
                if "locked" not in str(e):
                    raise
            connection.execute(_SCHEMA)
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def close(self) -> None:
        """Close every thread's connection (once those threads are done with them)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    def get(self, user_id: str) -> User | None:
        """The user stored as ``user_id``, or None."""
        row = (
            self._connection()
            .execute(
                "SELECT user_id, password_hash, salt, is_superuser FROM users WHERE user_id = ?", (user_id,)
            )
            .fetchone()
        )
        return None if row is None else User(row[0], row[1], row[2], bool(row[3]))

    def version(self) -> tuple[int, int]:
        """A value that changes whenever another connection commits to the file: SQLite's
        ``PRAGMA data_version`` of this thread's connection, with that connection's identity (the
        counter is per connection)."""
        connection = self._connection()
        return id(connection), connection.execute("PRAGMA data_version").fetchone()[0]

    def table(self) -> dict[str, User]:
        """Every user, by user id, read in one transaction."""
        return {user.user_id: user for user in self.list()}

    def list(self) -> list[User]:
        """Every user, by user id."""
        rows = self._connection().execute(
            "SELECT user_id, password_hash, salt, is_superuser FROM users ORDER BY user_id"
        )
        return [User(row[0], row[1], row[2], bool(row[3])) for row in rows]

    def add(self, user: User) -> None:
        """Store a new user; ``UserExists`` if the id is taken."""
        try:
            self._connection().execute(
                "INSERT INTO users (user_id, password_hash, salt, is_superuser) VALUES (?, ?, ?, ?)",
                (user.user_id, user.password_hash, user.salt, int(user.is_superuser)),
            )
        except sqlite3.IntegrityError:
            raise UserExists(user.user_id) from None

    def delete(self, user_id: str) -> bool:
        """Remove a user; whether there was one."""
        return self._connection().execute("DELETE FROM users WHERE user_id = ?", (user_id,)).rowcount > 0

    def import_users(self, users: Iterable[User | None]) -> ImportCounts:
        """Store ``users`` in one transaction, in order (a later duplicate wins), as the reference's
        import with override: new → success, identical → skipped, different → override; None (a
        row that cannot be stored here) → failed."""
        counts = ImportCounts()
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            for user in users:
                counts.total += 1
                if user is None:
                    counts.failed += 1
                    continue
                row = connection.execute(
                    "SELECT password_hash, salt, is_superuser FROM users WHERE user_id = ?", (user.user_id,)
                ).fetchone()
                values = (user.password_hash, user.salt, int(user.is_superuser))
                if row is None:
                    counts.success += 1
                elif tuple(row) == values:
                    counts.skipped += 1
                    continue
                else:
                    counts.override += 1
                connection.execute(
                    "INSERT OR REPLACE INTO users (user_id, password_hash, salt, is_superuser) "
                    "VALUES (?, ?, ?, ?)",
                    (user.user_id, *values),
                )
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return counts
