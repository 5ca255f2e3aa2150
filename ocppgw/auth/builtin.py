"""``backend = built_in_database``: users in ``<[gateway] data_dir>/users.sqlite`` (``ocppgw users``).

As the reference: no password → ignore; an unknown user → ignore; a wrong password → deny
``bad_username_or_password``; the right one → allow, with the user's ``is_superuser``. The user id
is the Basic-auth username or the charge point id (``user_id_type``). SQLite runs in a small thread
pool of its own and bcrypt/pbkdf2 in the hashing pool, so the reactor never blocks; the file is
read at every handshake, so a user the CLI adds is seen at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.python.failure import Failure
from zope.interface import implementer

from ocppgw.auth.hashing import HashingError, HashingPool, HashSettings, WorkerPool
from ocppgw.auth.users import User, UserStore
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Credentials, Decision, IAuthenticator

_DB_THREADS = 2
_HASH_THREADS = 4


@implementer(IAuthenticator)
class BuiltinAuthenticator:
    """Checks a charge point's password against the users table."""

    def __init__(
        self,
        store: UserStore,
        hashing: HashingPool,
        database: WorkerPool,
        reactor: Any,
        user_id_type: str = "username",
        timeout: float = 5.0,
    ) -> None:
        self.store, self.hashing, self.database = store, hashing, database
        self.reactor = reactor
        self.user_id_type = user_id_type
        self.timeout = timeout

    def start(self) -> None:
        """Start the thread pools; never blocks (the file is opened by the first lookup)."""
        self.database.start()
        self.hashing.start()

    def stop(self) -> Deferred[None]:
        """Stop both pools, then close the SQLite connections."""
        stopped = DeferredList([self.database.stop(), self.hashing.stop()])
        return stopped.addCallback(lambda _: self.store.close())

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        """The decision for ``credentials``; never fails, answers within ``request_timeout``."""
        user_id = credentials.cid if self.user_id_type == "clientid" else credentials.username
        if credentials.password is None or not user_id or not _storable(user_id):
            done: Deferred[Decision] = Deferred()
            done.callback(Decision.ignore())
            return done
        password = credentials.password
        looked_up: Deferred[User | None] = self.database.run(self.store.get, user_id)

        def decide(user: User | None) -> Deferred[Decision] | Decision:
            if user is None:
                return Decision.ignore()
            checked = self.hashing.check(user.password_hash, user.salt, password)
            return checked.addCallback(
                lambda ok: (
                    Decision.allow(user.is_superuser) if ok else Decision.deny("bad_username_or_password")
                )
            )

        def failed(failure: Failure) -> Decision:
            if failure.check(TimeoutError):
                why = f"built_in_database: no answer within {self.timeout:g}s"
            elif failure.check(HashingError):
                why = f"built_in_database: stored password of {user_id!r} cannot be checked: {failure.value}"
            else:
                why = f"built_in_database: {failure.getErrorMessage()}"
            return Decision.unavailable(why)

        decision = looked_up.addCallback(decide)
        decision.addTimeout(self.timeout, self.reactor)
        return decision.addErrback(failed)


def _storable(user_id: str) -> bool:
    """Whether ``user_id`` can be a stored id: a Basic-auth name that is not UTF-8 never is."""
    try:
        user_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def make(section: AuthenticationSection, reactor: Any, data_dir: Path) -> BuiltinAuthenticator:
    """The built-in database authenticator of ``section``, its users in ``data_dir``/users.sqlite."""
    settings = HashSettings.of(section)
    return BuiltinAuthenticator(
        UserStore(data_dir),
        HashingPool(reactor, settings, _HASH_THREADS),
        WorkerPool(reactor, "ocppgw-users", _DB_THREADS),
        reactor,
        user_id_type=section.user_id_type,
        timeout=section.request_timeout,
    )
