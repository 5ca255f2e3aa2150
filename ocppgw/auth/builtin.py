"""``backend = built_in_database``: users in ``<[gateway] data_dir>/users.sqlite`` (``ocppgw users``).

As the reference: no password → ignore; an unknown user → ignore; a wrong password → deny
``bad_username_or_password``; the right one → allow, with the user's ``is_superuser``. The user id
is the Basic-auth username or the charge point id (``user_id_type``).

The table is held in memory (``user_table``): a handshake costs two ``stat`` calls and a dict look-up
on the reactor, and the cheap algorithms (plain, md5, sha*) are checked there too, so the answer is
ready at once, with no timer. Only when the file changed (a user added by the CLI, seen at the next
handshake) does the decision wait for the users thread, and bcrypt/pbkdf2 for the hashing pool;
those waits are bounded by ``request_timeout``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from ocppgw.auth.hashing import HashingError, HashingPool, HashSettings
from ocppgw.auth.pool import BlockingPool, Expired, Overloaded
from ocppgw.auth.user_table import UserTable
from ocppgw.auth.users import User, UserStore
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Credentials, Decision, IAuthenticator

_USERS_QUEUE = 4096  # refreshes waiting for the users thread at most (each is microseconds of work)


@implementer(IAuthenticator)
class BuiltinAuthenticator:
    """Checks a charge point's password against the users table."""

    def __init__(
        self,
        table: UserTable,
        hashing: HashingPool,
        reactor: Any,
        user_id_type: str = "username",
        timeout: float = 5.0,
    ) -> None:
        self.table, self.hashing = table, hashing
        self.reactor = reactor
        self.user_id_type = user_id_type
        self.timeout = timeout

    def start(self) -> None:
        """Start the pools and load the table in the users thread; never blocks, never fails (a
        file that cannot be read makes handshakes unavailable until it can)."""
        self.table.pool.start()
        self.hashing.start()
        self.table.refresh().addErrback(lambda _: None)

    def stop(self) -> Deferred[None]:
        """Stop both pools, then close the SQLite connection."""
        hashing = self.hashing.stop()
        stopped = self.table.pool.stop().addCallback(lambda _: hashing)
        return stopped.addCallback(lambda _: self.table.close())

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        """The decision for ``credentials``; never fails, answers within ``request_timeout``."""
        user_id = credentials.cid if self.user_id_type == "clientid" else credentials.username
        password = credentials.password
        if password is None or not user_id or not _storable(user_id):
            return succeed(Decision.ignore())
        users = self.table.current()
        if users is not None:
            decision = self._check(users.get(user_id), password)
        else:
            decision = self.table.refresh().addCallback(
                lambda table: self._check(table.get(user_id), password)
            )
        if not decision.called or decision.paused:  # waits for a thread: bounded
            decision.addTimeout(self.timeout, self.reactor)
        return decision.addErrback(self._failed, user_id)

    def _check(self, user: User | None, password: bytes) -> Deferred[Decision]:
        if user is None:
            return succeed(Decision.ignore())
        superuser = user.is_superuser
        checked = self.hashing.check(user.password_hash, user.salt, password)
        return checked.addCallback(
            lambda ok: Decision.allow(superuser) if ok else Decision.deny("bad_username_or_password")
        )

    def _failed(self, failure: Failure, user_id: str) -> Decision:
        if failure.check(TimeoutError, Expired):
            why = f"built_in_database: no answer within {self.timeout:g}s"
        elif failure.check(Overloaded):
            why = f"built_in_database: overloaded ({failure.getErrorMessage()})"
        elif failure.check(HashingError):
            why = f"built_in_database: stored password of {user_id!r} cannot be checked: {failure.value}"
        else:
            why = f"built_in_database: {failure.getErrorMessage()}"
        return Decision.unavailable(why)


def _storable(user_id: str) -> bool:
    """Whether ``user_id`` can be a stored id: a Basic-auth name that is not UTF-8 never is."""
    try:
        user_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def make(section: AuthenticationSection, reactor: Any, data_dir: Path) -> BuiltinAuthenticator:
    """The built-in database authenticator of ``section``, its users in ``data_dir``/users.sqlite."""
    timeout = section.request_timeout
    users = BlockingPool(reactor, "ocppgw-users", 1, max_queued=_USERS_QUEUE)  # 1: see UserTable
    return BuiltinAuthenticator(
        UserTable(UserStore(data_dir), users, timeout),
        HashingPool(HashSettings.of(section), reactor, timeout, section.hashing_priority),
        reactor,
        user_id_type=section.user_id_type,
        timeout=timeout,
    )
