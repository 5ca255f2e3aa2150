"""The postgresql/mysql backend on a fake pool: A.5's mapping, bound parameters, the timeout, and the
one reconnect after a server restart."""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from ocppgw.auth.pool import Expired
from ocppgw.auth.sql import SqlAuthenticator, fetch_first, mysql_pool, postgresql_pool
from ocppgw.core.ports import Decision, Outcome
from tests.support_lookup import SALT, credentials, fake_verify, section, sha256_suffix

QUERY = "SELECT password_hash, salt, is_superuser FROM mqtt_user WHERE username = ${username} LIMIT 1"


class OperationalError(Exception):
    """The driver's OperationalError: the server dropped the connection."""


class FakeCursor:
    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.description: list[tuple[str]] = []

    def execute(self, sql: str, params: tuple[str, ...]) -> None:
        self.connection.executed.append((sql, params))
        if self.connection.fail:
            self.connection.fail -= 1
            raise OperationalError("server closed the connection unexpectedly")
        self.description = [(name,) for name in self.connection.columns]

    def fetchone(self) -> tuple | None:
        return self.connection.rows[0] if self.connection.rows else None

    def close(self) -> None:
        pass


class FakeConnection:
    """An adbapi connection: rows of ``columns``; ``fail`` executions raise ``OperationalError``."""

    def __init__(self) -> None:
        self.columns: tuple[str, ...] = ("password_hash", "salt", "is_superuser")
        self.rows: list[tuple] = []
        self.executed: list[tuple[str, tuple[str, ...]]] = []
        self.fail = 0
        self.reconnects = 0

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def reconnect(self) -> None:
        self.reconnects += 1


class FakeDbapi:
    OperationalError = OperationalError
    InterfaceError = OperationalError


class FakeDbPool:
    """``adbapi.ConnectionPool`` in-line; ``hang`` makes every lookup a worker that never returns."""

    dbapi = FakeDbapi

    def __init__(self) -> None:
        self.connection = FakeConnection()
        self.hang = False
        self.started = False

    def start(self) -> None:
        self.started = True

    def runWithConnection(self, function: Any, *args: Any) -> Deferred[Any]:
        return Deferred() if self.hang else maybeDeferred(function, self.connection, *args)


class SqlAuthenticatorTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dbpool = FakeDbPool()
        self.verify, self.checks = fake_verify()
        self.connection = self.dbpool.connection
        self.connection.rows = [(sha256_suffix(b"secret"), SALT, 1)]

    def backend(self, query: str = QUERY, **fields: Any) -> SqlAuthenticator:
        authenticator = SqlAuthenticator(
            "postgresql",
            section("postgresql", query=query, **fields),
            self.clock,
            lambda: self.dbpool,
            self.verify,
        )
        authenticator.start()
        return authenticator

    def decide(self, authenticator: SqlAuthenticator, **presented: Any) -> Decision:
        return self.successResultOf(authenticator.authenticate(credentials(**presented)))

    def test_right_wrong_unknown(self) -> None:
        """Right password: allow (superuser from 1); wrong: bad_username_or_password; no row: ignore."""
        backend = self.backend()
        self.assertEqual(self.decide(backend), Decision.allow(is_superuser=True))
        self.assertEqual(self.decide(backend, password=b"wrong"), Decision.deny("bad_username_or_password"))
        self.connection.rows = []
        self.assertEqual(self.decide(backend), Decision.ignore())

    def test_parameters_are_bound(self) -> None:
        """Placeholders, bare or double-quoted, become %s with their values as parameters, in order."""
        query = (
            'SELECT password_hash FROM u WHERE username = "${username}" AND cid = ${clientid}'
            + " AND x LIKE 'a%'"
        )

        self.decide(self.backend(query), username="al'ice")
        sql, params = self.connection.executed[0]
        self.assertEqual(sql, "SELECT password_hash FROM u WHERE username = %s AND cid = %s AND x LIKE 'a%%'")
        self.assertEqual(params, ("al'ice", "CP1"))

    def test_no_password_presented(self) -> None:
        """No Basic password: ignore, and no query is sent."""
        self.assertEqual(self.decide(self.backend(), password=None), Decision.ignore())
        self.assertEqual(self.connection.executed, [])

    def test_not_utf8_value(self) -> None:
        """A value no text column can hold (non-UTF-8 username bytes) matches no row: ignore."""
        query = "SELECT password_hash FROM u WHERE password = ${password}"
        self.assertEqual(self.decide(self.backend(query), password=b"\xff"), Decision.ignore())
        self.assertEqual(self.connection.executed, [])

    def test_no_password_column(self) -> None:
        """A row without password_hash or password: deny not_authorized."""
        self.connection.columns = ("salt", "is_superuser")
        self.connection.rows = [(SALT, 0)]
        self.assertEqual(self.decide(self.backend()), Decision.deny("not_authorized"))

    def test_password_column_and_text_superuser(self) -> None:
        """The ``password`` column is read when there is no ``password_hash``; "1" is a superuser."""
        self.connection.columns = ("password", "salt", "is_superuser")
        self.connection.rows = [(sha256_suffix(b"secret"), SALT, "1"), ("other", "", "0")]
        self.assertEqual(self.decide(self.backend()), Decision.allow(is_superuser=True))

    def test_null_salt(self) -> None:
        """A NULL salt with a suffix position cannot be checked: UNAVAILABLE, not a wrong password."""
        self.connection.rows = [(sha256_suffix(b"secret"), None, 0)]
        self.assertEqual(self.decide(self.backend()).outcome, Outcome.UNAVAILABLE)

    def test_timeout(self) -> None:
        """A lookup with no answer is UNAVAILABLE at request_timeout."""
        self.dbpool.hang = True
        d = self.backend(request_timeout=3.0).authenticate(credentials())
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), Decision.unavailable("postgresql: no answer within 3s"))

    def test_driver_error(self) -> None:
        """A connection error twice (retry included): UNAVAILABLE naming the error."""
        self.connection.fail = 2
        decision = self.decide(self.backend())
        self.assertEqual(decision.outcome, Outcome.UNAVAILABLE)
        self.assertIn("OperationalError: server closed the connection unexpectedly", decision.reason)

    def test_not_started(self) -> None:
        """Before start(): UNAVAILABLE, never an exception."""
        backend = SqlAuthenticator(
            "mysql", section("mysql", query=QUERY), self.clock, FakeDbPool, self.verify
        )
        self.assertEqual(self.decide(backend), Decision.unavailable("mysql: RuntimeError"))

    @inlineCallbacks
    def test_stop(self) -> Generator[Deferred[Any], Any, None]:
        """stop() closes the pool (its threads joined off the reactor thread) and fires."""
        backend = SqlAuthenticator(
            "postgresql", section("postgresql", query=QUERY), reactor, FakeDbPool, self.verify
        )
        backend.start()
        closed: list[bool] = []
        backend._dbpool.finalClose = lambda: closed.append(True)
        yield backend.stop()
        self.assertEqual(closed, [True])


class FetchFirstTests(unittest.TestCase):
    def setUp(self) -> None:
        self.connection = FakeConnection()
        self.connection.rows = [("h", "s", 1)]

    def test_first_row_by_column_name(self) -> None:
        """The first row, keyed by the cursor's column names."""
        row = fetch_first(self.connection, "q", (), time.monotonic() + 5, (OperationalError,))
        self.assertEqual(row, {"password_hash": "h", "salt": "s", "is_superuser": 1})

    def test_reconnects_once(self) -> None:
        """A connection the server dropped (restart) is replaced once and the query retried."""
        self.connection.fail = 1
        self.assertIsNotNone(fetch_first(self.connection, "q", (), time.monotonic() + 5, (OperationalError,)))
        self.assertEqual(self.connection.reconnects, 1)
        self.connection.fail = 2
        self.assertRaises(
            OperationalError, fetch_first, self.connection, "q", (), time.monotonic() + 5, (OperationalError,)
        )

    def test_expired(self) -> None:
        """A lookup reaching its worker after the deadline is not run."""
        self.assertRaises(
            Expired, fetch_first, self.connection, "q", (), time.monotonic() - 1, (OperationalError,)
        )
        self.assertEqual(self.connection.executed, [])


class DriverOptionsTests(unittest.TestCase):
    def test_postgresql(self) -> None:
        """psycopg: the pool size, autocommit, statement and TCP timeouts, TLS verify-full with a CA."""
        s = section(
            "postgresql", server="db.example:6432", database="auth", username="gw", pool_size=5,
            request_timeout=2.5, ssl_cacertfile="/ca.pem",
        )  # fmt: skip
        pool = postgresql_pool(s, MemoryReactorClock())
        self.assertEqual((pool.dbapiName, pool.min, pool.max, pool.reconnect), ("psycopg", 1, 5, True))
        kw = pool.connkw
        self.assertEqual(
            (kw["host"], kw["port"], kw["dbname"], kw["user"]), ("db.example", 6432, "auth", "gw")
        )
        self.assertEqual(
            (kw["options"], kw["tcp_user_timeout"], kw["connect_timeout"]),
            ("-c statement_timeout=2500", 2500, 3),
        )
        self.assertEqual(
            (kw["sslmode"], kw["sslrootcert"], kw["autocommit"]), ("verify-full", "/ca.pem", True)
        )

    def test_mysql(self) -> None:
        """PyMySQL: default port and user, client timeouts, TLS without verification when asked."""
        s = section(
            "mysql",
            server="db",
            database="auth",
            ssl_certfile="/c.pem",
            ssl_keyfile="/k.pem",
            ssl_verify=False,
        )
        kw = mysql_pool(s, MemoryReactorClock()).connkw
        self.assertEqual(
            (kw["port"], kw["user"], kw["read_timeout"], kw["connect_timeout"]), (3306, "root", 1.0, 1.0)
        )
        self.assertEqual((kw["ssl_cert"], kw["ssl_key"], kw["ssl_verify_cert"]), ("/c.pem", "/k.pem", False))
        self.assertNotIn("ssl_ca", kw)
