"""The management API's administrators: ``<data_dir>/admins.sqlite``, passwords hashed with bcrypt.

Shared by the gateway (login) and ``ocppgw admins``; each call opens and closes its own connection,
so the CLI's changes are seen by the next login without a restart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ocppgw.api.http import ADMINISTRATOR, ROLES
from ocppgw.auth.hashing import HashingError, HashSettings, check, generate

FILE_NAME = "admins.sqlite"
INITIAL_PASSWORD_FILE = "initial_admin_password"
INITIAL_ADMIN = "admin"
_HASHING = HashSettings(algorithm="bcrypt", salt_rounds=10)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS admins"
    " (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL)"
)


class AdminExists(Exception):
    """``add`` of a name already taken."""


@dataclass(frozen=True)
class Admin:
    username: str
    role: str


class AdminStore:
    """The administrators table; methods may block (SQLite, bcrypt): call them off the reactor."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=5)
        try:
            with connection:
                connection.execute(_SCHEMA)
                yield connection
        finally:
            connection.close()

    def list(self) -> list[Admin]:
        with self._db() as db:
            return [
                Admin(name, role)
                for name, role in db.execute("SELECT username, role FROM admins ORDER BY username")
            ]

    def add(self, username: str, password: str, role: str = ADMINISTRATOR) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        hashed, _ = generate(_HASHING, password.encode("utf-8"))
        try:
            with self._db() as db:
                db.execute("INSERT INTO admins VALUES (?, ?, ?)", (username, hashed, role))
        except sqlite3.IntegrityError:
            raise AdminExists(username) from None

    def set_password(self, username: str, password: str) -> bool:
        """Whether ``username`` exists (and now has ``password``)."""
        hashed, _ = generate(_HASHING, password.encode("utf-8"))
        with self._db() as db:
            return (
                db.execute(
                    "UPDATE admins SET password_hash = ? WHERE username = ?", (hashed, username)
                ).rowcount
                > 0
            )

    def delete(self, username: str) -> bool:
        with self._db() as db:
            return db.execute("DELETE FROM admins WHERE username = ?", (username,)).rowcount > 0

    def verify(self, username: str, password: str) -> Admin | None:
        """The administrator when ``password`` is theirs, else None (slow on purpose: bcrypt)."""
        with self._db() as db:
            row = db.execute(
                "SELECT password_hash, role FROM admins WHERE username = ?", (username,)
            ).fetchone()
        if row is None:
            return None
        try:
            ok = check(_HASHING, row[0], "", password.encode("utf-8", "surrogateescape"))
        except HashingError:
            return None
        return Admin(username, row[1]) if ok else None

    def create_initial_admin(self) -> Path | None:
        """With no administrator at all: ``admin`` with a random password, written to
        ``<data_dir>/initial_admin_password`` (mode 0600); that file's path, else None."""
        if self.list():
            return None
        password = secrets.token_urlsafe(18)
        path = self.path.parent / INITIAL_PASSWORD_FILE
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a file left from before: it would keep its old mode
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(password + "\n")
        self.add(INITIAL_ADMIN, password)
        return path
