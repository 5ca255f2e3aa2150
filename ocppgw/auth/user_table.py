"""The built-in database's users table held in memory, reloaded only when ``users.sqlite`` changed.

A handshake must see a user the CLI (another process) committed before it, without a thread hop or
an SQLite read on the reactor per handshake. Before each decision the reactor compares ``os.stat``
of ``users.sqlite`` and ``users.sqlite-wal`` (inode, size, mtime_ns: metadata only, no lock, no
read) with what they were when the table was last confirmed current. Unchanged: the table in memory
answers. Changed: the pool thread reads SQLite's ``PRAGMA data_version`` (which changes exactly when
another connection committed) and reloads the table only when it moved.

Why a CLI write cannot be missed: the pool takes the files' stats at wall time ``B`` *before* it
reads. A commit that read did not see writes its frames to the ``-wal`` file (or, on checkpoint,
the main file) after ``B``; that ``write()`` stamps the file's mtime with the kernel's clock, which
is coarse (a tick, or the filesystem's granularity, e.g. 1-2 s) but never earlier than ``B`` minus
one such tick. So a later stat equals the recorded one only if the recorded mtime was within a tick
of ``B``: such a record is "racy" (as in git's racy-clean index) and is never trusted; every
decision checks ``data_version`` in the pool until a record is taken ``RACY_NS`` after the last
write. A WAL reset after a checkpoint, which rewrites the ``-wal`` from its start without growing
it, changes its mtime the same way; deleting and re-creating the file changes the inode. (Assumes
the wall clock does not step back by more than ``RACY_NS`` and that the file is on a local
filesystem.) Memory: the one table, replaced whole at a reload.
"""

from __future__ import annotations

import os
import time

from twisted.internet.defer import Deferred

from ocppgw.auth.pool import BlockingPool
from ocppgw.auth.users import User, UserStore

RACY_NS = 2_000_000_000  # a stat this close to its reading is not trusted (coarse file timestamps)

FileStat = tuple[int, int, int] | None  # inode, size, mtime_ns; None: no such file
Signature = tuple[FileStat, FileStat]


def _file(path: str) -> FileStat:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class UserTable:
    """``current()`` on the reactor (two ``stat`` calls); ``refresh()`` in ``pool`` (one thread: the
    ``data_version`` counter belongs to that thread's connection)."""

    def __init__(self, store: UserStore, pool: BlockingPool, timeout: float) -> None:
        self.store, self.pool, self.timeout = store, pool, timeout
        self._files = (str(store.path), f"{store.path}-wal")
        self._users: dict[str, User] | None = None
        self._signature: Signature | None = None  # the files when the table was last confirmed
        # the pool thread's own: data_version and the table read at it (consistent even when a
        # refresh's answer is dropped because its handshake timed out)
        self._loaded: tuple[tuple[int, int], dict[str, User]] | None = None
        self.reloads = 0  # how often the table was read whole

    def signature_paths(self) -> tuple[str, str]:
        """The two files whose stats are compared: ``users.sqlite`` and its ``-wal``."""
        return self._files

    def signature(self) -> Signature:
        """Both files' stats now; raises OSError when they cannot be looked at."""
        return _file(self._files[0]), _file(self._files[1])

    def current(self) -> dict[str, User] | None:
        """The table when the files are as they were when it was confirmed current, else None
        (ask ``refresh``)."""
        if self._signature is None:
            return None
        try:
            unchanged = self.signature() == self._signature
        except OSError:
            return None
        return self._users if unchanged else None

    def refresh(self) -> Deferred[dict[str, User]]:
        """The table as committed now, read in the pool; fails when the file cannot be read, the
        queue is full or the job waited past ``timeout``."""
        d = self.pool.run(self.timeout, self._read)
        return d.addCallback(self._confirmed)

    def _read(self) -> tuple[Signature | None, dict[str, User]]:
        """In the pool thread: the stats taken before ``data_version`` (None if racy) and the table,
        read again only if ``data_version`` moved since this connection last read it."""
        began = time.time_ns()
        signature = self.signature()
        version = self.store.version()
        if self._loaded is None or self._loaded[0] != version:
            self._loaded = version, self.store.table()
            self.reloads += 1
        stamps = [stat[2] for stat in signature if stat is not None]
        trusted = not stamps or max(stamps) < began - RACY_NS
        return (signature if trusted else None), self._loaded[1]

    def _confirmed(self, read: tuple[Signature | None, dict[str, User]]) -> dict[str, User]:
        self._signature, self._users = read
        return self._users

    def close(self) -> None:
        """Close the store's connections (once the pool is stopped)."""
        self.store.close()
