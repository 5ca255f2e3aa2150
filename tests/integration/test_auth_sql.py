"""The postgresql and mysql backends against the machine's real PostgreSQL and MariaDB, each behind a
TCP proxy the test closes and reopens: a database of its own per test, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator
from typing import Any

import psycopg
import pymysql
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial import unittest

from ocppgw.auth.sql import SqlAuthenticator, mysql_pool, postgresql_pool
from ocppgw.core.ports import Decision, Outcome
from tests.support_lookup import SALT, credentials, fake_verify, section, sha256_suffix
from tests.support_proxy import TcpProxy, assert_unavailable_in_time

QUERY = (
    "SELECT password_hash, salt, super_int AS is_superuser "
    " FROM mqtt_user WHERE username = ${username} LIMIT 1"
)
TEXT_FLAG = (
    'SELECT password_hash, salt, super_text AS is_superuser FROM mqtt_user WHERE username = "${username}"'
)
ROWS = [
    ("alice", sha256_suffix(b"secret"), SALT, 1, "1"),
    ("bob", sha256_suffix(b"hunter2"), SALT, 0, "0"),
    ("nosalt", sha256_suffix(b"secret"), None, 0, "0"),
]


class _SqlBackendTests:
    """What both databases must do; a subclass says how to make and drop its database."""

    backend_name = ""
    port = 0
    request_timeout = 1.0  # (trial reads ``timeout`` as the test's own)

    def create_database(self, name: str) -> None:
        raise NotImplementedError

    def drop_database(self, name: str) -> None:
        raise NotImplementedError

    def pool_factory(self) -> Callable[..., Any]:
        raise NotImplementedError

    def setUp(self) -> None:
        self.database = "ocppgw_t_" + uuid.uuid4().hex[:12]
        self.create_database(self.database)
        self.addCleanup(self.drop_database, self.database)
        self.proxy = TcpProxy(self.port)
        self.proxy.open()
        self.addCleanup(self.proxy.close)

    def backend(self, query: str = QUERY) -> SqlAuthenticator:
        s = section(
            self.backend_name, server=f"127.0.0.1:{self.proxy.port}", database=self.database,
            username=self.user, query=query, request_timeout=self.request_timeout,
        )  # fmt: skip
        verify, _ = fake_verify()
        factory = self.pool_factory()
        authenticator = SqlAuthenticator(self.backend_name, s, reactor, lambda: factory(s, reactor), verify)
        authenticator.start()
        self.addCleanup(authenticator.stop)  # before the proxy closes and the database is dropped
        return authenticator

    @inlineCallbacks
    def test_right_wrong_unknown(self) -> Generator[Deferred[Any], Any, None]:
        """Right password: allow (superuser from integer 1); wrong: bad_username_or_password; unknown
        user and no password: ignore."""
        backend = self.backend()
        self.assertEqual((yield backend.authenticate(credentials())), Decision.allow(is_superuser=True))
        wrong = yield backend.authenticate(credentials(password=b"wrong"))
        self.assertEqual(wrong, Decision.deny("bad_username_or_password"))
        self.assertEqual((yield backend.authenticate(credentials(username="carol"))), Decision.ignore())
        self.assertEqual((yield backend.authenticate(credentials(password=None))), Decision.ignore())
        self.assertEqual((yield backend.authenticate(credentials("bob", b"hunter2"))), Decision.allow())

    @inlineCallbacks
    def test_quoted_placeholder_text_flag_null_salt(self) -> Generator[Deferred[Any], Any, None]:
        """``"${username}"`` is a bound parameter; ``is_superuser`` "1" is true, "0" false; a quote in
        the username is data; a NULL salt is UNAVAILABLE."""
        backend = self.backend(TEXT_FLAG)
        self.assertEqual((yield backend.authenticate(credentials())), Decision.allow(is_superuser=True))
        self.assertEqual((yield backend.authenticate(credentials("bob", b"hunter2"))), Decision.allow())
        injected = yield backend.authenticate(credentials('x" OR "1"="1', b"secret"))
        self.assertEqual(injected, Decision.ignore())
        self.assertEqual((yield backend.authenticate(credentials("nosalt"))).outcome, Outcome.UNAVAILABLE)

    @inlineCallbacks
    def test_no_password_column(self) -> Generator[Deferred[Any], Any, None]:
        """A row without a password column: deny not_authorized."""
        backend = self.backend("SELECT salt FROM mqtt_user WHERE username = ${username}")
        self.assertEqual((yield backend.authenticate(credentials())), Decision.deny("not_authorized"))

    @inlineCallbacks
    def test_stopped_then_back(self) -> Generator[Deferred[Any], Any, None]:
        """Database gone (connections dropped, refused): UNAVAILABLE within request_timeout + 1 s;
        back: the next handshake is allowed on a fresh connection."""
        backend = self.backend()
        self.assertTrue((yield backend.authenticate(credentials())).allowed)
        yield self.proxy.close()
        yield assert_unavailable_in_time(self, backend, credentials(), self.request_timeout + 1)
        self.proxy.open()
        self.assertEqual((yield backend.authenticate(credentials())), Decision.allow(is_superuser=True))

    @inlineCallbacks
    def test_restart_between_handshakes(self) -> Generator[Deferred[Any], Any, None]:
        """A restart no handshake saw (every pooled connection dropped meanwhile): the next handshake
        is allowed, on a fresh connection, not refused because of the dead one."""
        backend = self.backend()
        for _ in range(3):
            self.assertTrue((yield backend.authenticate(credentials())).allowed)
        yield self.proxy.close()
        self.proxy.open()
        self.assertEqual((yield backend.authenticate(credentials())), Decision.allow(is_superuser=True))

    @inlineCallbacks
    def test_hung_server(self) -> Generator[Deferred[Any], Any, None]:
        """A server that accepts but never answers: UNAVAILABLE within request_timeout + 1 s; when it
        is replaced by a working one, handshakes are allowed again."""
        backend = self.backend()
        self.assertTrue((yield backend.authenticate(credentials())).allowed)
        self.proxy.stall()
        yield assert_unavailable_in_time(self, backend, credentials(), self.request_timeout + 1)
        yield self.proxy.close()
        self.proxy.open()
        self.assertTrue((yield self._eventually_allowed(backend)))

    @inlineCallbacks
    def _eventually_allowed(self, backend: SqlAuthenticator) -> Generator[Deferred[Any], Any, bool]:
        """Allowed within a few handshakes: a worker stuck on the hung connection is freed by the
        proxy's close, and answers UNAVAILABLE while it still was."""
        for _ in range(5):
            if (yield backend.authenticate(credentials())).allowed:
                return True
        return False


class PostgresqlTests(_SqlBackendTests, unittest.TestCase):
    backend_name = "postgresql"
    port = 5432
    user = "postgres"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname="postgres", autocommit=True
        )

    def create_database(self, name: str) -> None:
        with self._admin() as admin:
            admin.execute(f"CREATE DATABASE {name}")
        with psycopg.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname=name, autocommit=True
        ) as db:
            db.execute(
                "CREATE TABLE mqtt_user (username text, password_hash text, salt text, super_int int,"
                " super_text text)"
            )
            with db.cursor() as cursor:
                cursor.executemany("INSERT INTO mqtt_user VALUES (%s, %s, %s, %s, %s)", ROWS)

    def drop_database(self, name: str) -> None:
        with self._admin() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def pool_factory(self) -> Callable[..., Any]:
        return postgresql_pool


class MysqlTests(_SqlBackendTests, unittest.TestCase):
    backend_name = "mysql"
    port = 3306
    user = "root"

    def _admin(self, database: str | None = None) -> pymysql.Connection:
        return pymysql.connect(
            host="127.0.0.1", port=3306, user="root", password="", database=database, autocommit=True
        )

    def create_database(self, name: str) -> None:
        with self._admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        with self._admin(name) as db, db.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE mqtt_user (username varchar(64), password_hash varchar(128), salt varchar(64),"
                " super_int int, super_text varchar(8))"
            )
            cursor.executemany("INSERT INTO mqtt_user VALUES (%s, %s, %s, %s, %s)", ROWS)

    def drop_database(self, name: str) -> None:
        with self._admin() as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")

    def pool_factory(self) -> Callable[..., Any]:
        return mysql_pool
