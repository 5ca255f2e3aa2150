"""What the database backends (postgresql, mysql, redis, mongodb) share: a stored record becomes a
``Decision`` by the reference's rules (A.5), blocking drivers run in a bounded pool of their own, and
every answer is bounded by ``request_timeout``.

The password check is a ``Verify`` callable, ``verify(stored_hash, salt, password) -> Deferred[bool]``
that fails when it cannot check (a NULL salt where the algorithm needs one): a failure is
UNAVAILABLE, not a wrong password, as in the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ocppgw.auth import hashing
from ocppgw.auth.common import to_bool
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Credentials, Decision

Verify = Callable[[str, "str | None", bytes], Deferred[bool]]

_log = Logger()


def server_address(server: str, default_port: int) -> tuple[str, int]:
    """``host[:port]`` or ``[v6 address][:port]``, with the backend's default port."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port = rest.removeprefix(":")
    elif server.count(":") == 1:
        host, _, port = server.partition(":")
    else:
        host, port = server, ""
    return host, int(port) if port else default_port


def _text(value: Any) -> str:
    """A stored hash or salt as text: drivers give str, or bytes for binary columns and Redis."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise TypeError(f"a stored hash or salt is a {type(value).__name__}, not text")


def decide(record: Mapping[str, Any], password: bytes, verify: Verify) -> Deferred[Decision]:
    """The reference's check of a selected record: ``password_hash``, else ``password`` (neither,
    or NULL: deny ``not_authorized``); ``salt`` absent is ``""`` and NULL is None (the check fails
    if the algorithm needs one); ``is_superuser`` by ``to_bool``; a mismatch is
    ``bad_username_or_password``."""
    stored = record.get("password_hash")
    if stored is None:
        stored = record.get("password")
    if stored is None:
        return succeed(Decision.deny("not_authorized"))
    salt = record.get("salt", "")
    superuser = record.get("is_superuser")
    if isinstance(superuser, bytes):
        superuser = superuser.decode("utf-8", "replace")
    is_superuser = to_bool(superuser)
    d = maybeDeferred(verify, _text(stored), None if salt is None else _text(salt), password)
    d.addCallback(
        lambda ok: Decision.allow(is_superuser) if ok else Decision.deny("bad_username_or_password")
    )
    return d


def bounded(
    work: Callable[[], Deferred[Decision]], timeout: float, reactor: Any, backend: str
) -> Deferred[Decision]:
    """``work()`` answered within ``timeout`` seconds; a timeout or any failure is UNAVAILABLE (the
    reason names the backend and the exception type, never a value that might be a password)."""
    d = maybeDeferred(work)
    d.addTimeout(timeout, reactor)

    def unavailable(failure: Failure) -> Decision:
        if failure.check(TimeoutError):
            why = f"{backend}: no answer within {timeout:g}s"
        else:
            why = f"{backend}: {failure_summary(failure)}"
        _log.info("authentication backend unavailable: {why}", why=why)
        return Decision.unavailable(why)

    d.addErrback(unavailable)
    return d


def failure_summary(failure: Failure) -> str:
    """The exception's type, and its first line for connection errors only: a query error's text may
    quote a bound value (a driver that escapes parameters client-side puts them in the SQL)."""
    name = type(failure.value).__name__
    if any(word in name for word in ("Connection", "Operational", "Interface", "ServerSelection", "Timeout")):
        first = str(failure.value).strip().splitlines()[:1]
        return f"{name}: {first[0][:200]}" if first else name
    return name


def hashing_pool(section: AuthenticationSection, reactor: Any) -> hashing.HashingPool:
    """The password check of ``section``'s algorithm (``ocppgw.auth.hashing``, its ``check``): bcrypt
    and pbkdf2 in hashing processes of the backend's own, the cheap ones inline; a stored value it
    cannot check (a NULL salt where one is needed) fails it, which the backends answer as
    unavailable."""
    settings = hashing.HashSettings.of(section)
    return hashing.HashingPool(settings, reactor, section.request_timeout, section.hashing_priority)


class RecordBackend:
    """What the record-reading backends share: no password is "ignore" without asking the server,
    and every lookup (``_lookup``) is bounded by ``request_timeout``, its failures unavailable."""

    backend = ""

    def __init__(
        self,
        section: AuthenticationSection,
        reactor: Any,
        verify: Verify,
        hashing_pool: hashing.HashingPool | None = None,
    ) -> None:
        """``hashing_pool``: the one ``verify`` hashes in, started and stopped with the backend."""
        self._timeout = section.request_timeout
        self._reactor = reactor
        self._verify = verify
        self._hashing = hashing_pool

    def start(self) -> None:
        if self._hashing is not None:
            self._hashing.start()

    def stop(self) -> Deferred[None]:
        return succeed(None) if self._hashing is None else self._hashing.stop()

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        if credentials.password is None:
            return succeed(Decision.ignore())
        return bounded(lambda: self._lookup(credentials), self._timeout, self._reactor, self.backend)

    def _lookup(self, credentials: Credentials) -> Deferred[Decision]:
        raise NotImplementedError


def tls_files(section: AuthenticationSection, names: tuple[str, str, str]) -> dict[str, str]:
    """The ``ssl_cacertfile``, ``ssl_certfile``, ``ssl_keyfile`` that are set, under a driver's names."""
    paths = (section.ssl_cacertfile, section.ssl_certfile, section.ssl_keyfile)
    return {name: str(path) for name, path in zip(names, paths, strict=True) if path}
