"""``postgresql`` and ``mysql``: one query per handshake through Twisted's ``adbapi``.

The query's placeholders (bare or double-quoted) are bound as parameters, never spliced into the SQL
text (``template.sql_parameters``). psycopg 3 binds them on the server; PyMySQL escapes them on the
client, as every MySQL DB-API driver without server-side prepared statements does.

A lookup cannot hold a worker for ever: connect and read timeouts on the client side, and a statement
timeout on the server side (PostgreSQL ``statement_timeout``, MariaDB ``max_statement_time``, MySQL
``max_execution_time``), all from ``request_timeout``. After a database restart, the first lookup on a
pooled connection that the server dropped reconnects once and retries, so the next handshake succeeds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, gatherResults, succeed
from zope.interface import implementer

from ocppgw.auth import template
from ocppgw.auth.hashing import HashingPool
from ocppgw.auth.lookup import (
    RecordBackend,
    Verify,
    decide,
    hashing_pool,
    server_address,
    tls_files,
)
from ocppgw.auth.pool import Expired, in_own_thread
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Credentials, Decision, IAuthenticator

DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


class _LookupConnection(adbapi.Connection):
    """A pooled connection for read-only lookups in autocommit mode: nothing to commit, and a failed
    lookup drops the connection (the next one on this thread reconnects) instead of adbapi's
    rollback probe, which logs a traceback for every handshake while the server is down."""

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pool, connection = self._pool, self._connection
        if connection is not None and pool.connections.get(pool.threadID()) is connection:
            pool.disconnect(connection)


class _Pool(adbapi.ConnectionPool):
    connectionFactory = _LookupConnection


def postgresql_pool(section: AuthenticationSection, reactor: Any) -> adbapi.ConnectionPool:
    """psycopg 3: server-side parameter binding, ``statement_timeout``, ``tcp_user_timeout``;
    TLS ``sslmode`` verify-full (``ssl_verify``) or require when a CA or client certificate is set."""
    host, port = server_address(section.server, DEFAULT_PORTS["postgresql"])
    millis = max(1, int(section.request_timeout * 1000))
    options: dict[str, Any] = {"host": host, "port": port, "dbname": section.database}
    options |= {
        "user": section.username or "",
        "password": section.password or "",
        "connect_timeout": max(2, math.ceil(section.request_timeout)),  # libpq's minimum is 2
        "options": f"-c statement_timeout={millis}",
        "tcp_user_timeout": millis,
        "application_name": "ocppgw",
        "autocommit": True,
    }
    if section.ssl_cacertfile or section.ssl_certfile:
        options["sslmode"] = "verify-full" if section.ssl_verify and section.ssl_cacertfile else "require"
        options.update(tls_files(section, ("sslrootcert", "sslcert", "sslkey")))
    return _pool("psycopg", section, reactor, options, None)


def mysql_pool(section: AuthenticationSection, reactor: Any) -> adbapi.ConnectionPool:
    """PyMySQL: connect/read/write timeouts and a server-side statement timeout; TLS with
    ``ssl_ca``/``ssl_cert``/``ssl_key``, certificate and host name checked when ``ssl_verify``."""
    host, port = server_address(section.server, DEFAULT_PORTS["mysql"])
    seconds = section.request_timeout
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "database": section.database,
        "user": section.username or "root",
        "password": section.password or "",
        "connect_timeout": seconds,
        "read_timeout": seconds,
        "write_timeout": seconds,
        "autocommit": True,
        "charset": "utf8mb4",
    }
    if section.ssl_cacertfile or section.ssl_certfile:
        options.update(ssl_verify_cert=section.ssl_verify, ssl_verify_identity=section.ssl_verify)
        options.update(tls_files(section, ("ssl_ca", "ssl_cert", "ssl_key")))

    def statement_timeout(connection: Any) -> None:
        # MariaDB and MySQL name (and scale) the limit differently; an unknown variable is an error
        mariadb = "mariadb" in connection.get_server_info().lower()
        setting = (
            f"max_statement_time = {seconds:g}" if mariadb else f"max_execution_time = {int(seconds * 1000)}"
        )
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION " + setting)

    return _pool("pymysql", section, reactor, options, statement_timeout)


def _pool(
    module: str, section: AuthenticationSection, reactor: Any, options: dict[str, Any], openfun: Any
) -> adbapi.ConnectionPool:
    return _Pool(
        module,
        cp_min=1,
        cp_max=max(1, section.pool_size),
        cp_reconnect=True,
        cp_noisy=False,
        cp_openfun=openfun,
        cp_reactor=reactor,
        **options,
    )


def fetch_first(
    connection: Any, sql: str, params: tuple[str, ...], deadline: float, lost: tuple[type[Exception], ...]
) -> dict[str, Any] | None:
    """The first row as {column: value}, or None; in a pool worker. A connection the server dropped
    (``lost``: a restart) is replaced once, if time is left, before the error counts."""
    if time.monotonic() > deadline:
        raise Expired()
    try:
        return _first_row(connection, sql, params)
    except lost:
        if time.monotonic() > deadline:
            raise
        connection.reconnect()
        return _first_row(connection, sql, params)


def _first_row(connection: Any, sql: str, params: tuple[str, ...]) -> dict[str, Any] | None:
    cursor = connection.cursor()
    try:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            return None
        return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}
    finally:
        cursor.close()


@implementer(IAuthenticator)
class SqlAuthenticator(RecordBackend):
    """One parametrised query per handshake; the first row decides (``lookup.decide``)."""

    def __init__(
        self,
        backend: str,
        section: AuthenticationSection,
        reactor: Any,
        pool_factory: Callable[[], Any],
        verify: Verify,
        hashing_pool: HashingPool | None = None,
    ) -> None:
        super().__init__(section, reactor, verify, hashing_pool)
        self.backend = backend
        self._pool_factory = pool_factory
        self._sql, self._names = template.sql_parameters(section.query, "%s")
        self._dbpool: Any = None

    def start(self) -> None:
        """Builds the pool; it connects at the first lookup, so a database that is down at start-up
        only makes handshakes UNAVAILABLE until it is back."""
        super().start()
        if self._dbpool is None:
            self._dbpool = self._pool_factory()
            self._dbpool.start()

    def stop(self) -> Deferred[None]:
        pool, self._dbpool = self._dbpool, None
        waits = [super().stop()]
        if pool is not None:
            waits.append(_close(pool, self._reactor))
        return _all(waits)

    def _lookup(self, credentials: Credentials) -> Deferred[Decision]:
        params = []
        for name in self._names:
            value = template.render_text("${" + name + "}", credentials)
            if value is None:  # no text column can hold it: no row matches
                return succeed(Decision.ignore())
            params.append(value)
        if self._dbpool is None:
            raise RuntimeError("not started")
        deadline = time.monotonic() + self._timeout
        dbapi = self._dbpool.dbapi
        lost = (dbapi.OperationalError, dbapi.InterfaceError)
        d = self._dbpool.runWithConnection(fetch_first, self._sql, tuple(params), deadline, lost)
        d.addCallback(self._decide, credentials.password)
        return d

    def _decide(self, row: dict[str, Any] | None, password: bytes) -> Deferred[Decision]:
        return succeed(Decision.ignore()) if row is None else decide(row, password, self._verify)


def _close(pool: Any, reactor: Any) -> Deferred[None]:
    """``adbapi.ConnectionPool.close`` without blocking the reactor: its shutdown triggers are removed
    here, and joining its workers (possibly in a query until the statement timeout) in a thread."""
    for name in ("startID", "shutdownID"):
        trigger = getattr(pool, name, None)
        if trigger is not None:
            reactor.removeSystemEventTrigger(trigger)
            setattr(pool, name, None)
    return in_own_thread(reactor, pool.finalClose)


def _all(waits: list[Deferred[None]]) -> Deferred[None]:
    d = gatherResults(waits, consumeErrors=True)
    d.addCallback(lambda _: None)
    return d


def make(section: AuthenticationSection, reactor: Any, data_dir: Path) -> IAuthenticator:
    """The ``postgresql`` or ``mysql`` backend of ``section``."""
    factory = postgresql_pool if section.backend == "postgresql" else mysql_pool
    hashing = hashing_pool(section, reactor)
    return SqlAuthenticator(
        section.backend, section, reactor, lambda: factory(section, reactor), hashing.check, hashing
    )
