"""The backends with a server, through the real gateway: http (a Twisted Web server the test runs),
postgresql, mysql (MariaDB) and redis (the machine's servers, each behind a TCP proxy the test hangs,
closes and reopens: a database, table or keys of the test's own, removed afterwards), and jwt
(HS256 tokens as the password; a JWKS endpoint down at start-up)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator
from typing import Any

import jwt
import psycopg
import pymysql
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks

from ocppgw.auth.hashing import HashSettings, generate
from ocppgw.config.sections import AuthenticationSection
from tests.authserver import AuthServer, Reply
from tests.integration.test_authentication import (
    AUTH_TIMEOUT,
    RIGHT,
    TIMEOUT,
    UNAVAILABLE,
    AuthCase,
    ServerBackendScenario,
    _Judge,
    http_authentication,
)
from tests.support import poll_until
from tests.support_proxy import TcpProxy
from tests.test_auth_jwt import jwk, jwks_reply

HASHING = "password_hash_algorithm = sha256\nsalt_position = suffix\n"
USERS = ("CP001", "CP002")


def hashed(password: str) -> tuple[str, str]:
    """(password_hash, salt) as ``HASHING`` stores ``password``."""
    settings = HashSettings.of(AuthenticationSection("redis", salt_position="suffix"))
    return generate(settings, password.encode())


class HttpTests(ServerBackendScenario, AuthCase):
    """http: the server answers allow / deny / ignore from the posted body; deny is not_authorized."""

    wrong_reason = b"not_authorized"

    def setUp(self) -> None:
        self.server = _Judge()
        self.server.start()
        self.addCleanup(self.server.stop)

    def authentication(self) -> str:
        return http_authentication(self.server)

    def hang(self) -> None:
        self.server.reply = Reply(hang=True)

    def go_down(self) -> Deferred[Any]:
        return self.server.stop()

    def come_back(self) -> None:
        self.server.reply = None  # decide per request again
        self.server.start()


class _ProxiedServer(ServerBackendScenario):
    """A backend reached through a ``TcpProxy`` in front of the machine's server on ``port``."""

    port = 0

    def setUp(self) -> None:
        self.proxy = TcpProxy(self.port)
        self.proxy.open()
        self.addCleanup(self.proxy.close)

    def hang(self) -> None:
        self.proxy.stall()

    def go_down(self) -> Deferred[None]:
        return self.proxy.close()

    def come_back(self) -> None:
        self.proxy.open()


class _SqlServer(_ProxiedServer):
    """A database ``ocppgw_e2e_<random>`` with a table of users, dropped afterwards."""

    backend = ""
    user = ""
    quote = ""

    def setUp(self) -> None:
        super().setUp()
        self.database = "ocppgw_e2e_" + uuid.uuid4().hex[:12]
        rows = [(cid, *hashed(RIGHT)) for cid in USERS]
        self.create(rows)
        self.addCleanup(self.drop)

    def authentication(self) -> str:
        return (
            f"[authentication]\nbackend = {self.backend}\nserver = 127.0.0.1:{self.proxy.port}\n"
            f"database = {self.database}\nusername = {self.user}\n{HASHING}{AUTH_TIMEOUT}"
            "query = SELECT password_hash, salt FROM users WHERE username = ${username} LIMIT 1\n"
        )

    def create(self, rows: list[tuple[str, str, str]]) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError


class PostgresqlTests(_SqlServer, AuthCase):
    """postgresql: the machine's PostgreSQL on 127.0.0.1:5432."""

    backend, user, port = "postgresql", "postgres", 5432

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database, autocommit=True)

    def create(self, rows: list[tuple[str, str, str]]) -> None:
        with self.connect() as admin:
            admin.execute(f"CREATE DATABASE {self.database}")
        with self.connect(self.database) as db, db.cursor() as cursor:
            cursor.execute("CREATE TABLE users (username text, password_hash text, salt text)")
            cursor.executemany("INSERT INTO users VALUES (%s, %s, %s)", rows)

    def drop(self) -> None:
        with self.connect() as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")


class MysqlTests(_SqlServer, AuthCase):
    """mysql: the machine's MariaDB on 127.0.0.1:3306."""

    backend, user, port = "mysql", "root", 3306

    def connect(self, database: str | None = None) -> pymysql.Connection:
        return pymysql.connect(host="127.0.0.1", port=3306, user="root", database=database, autocommit=True)

    def create(self, rows: list[tuple[str, str, str]]) -> None:
        with self.connect() as admin, admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {self.database}")
        with self.connect(self.database) as db, db.cursor() as cursor:
            cursor.execute(
                "CREATE TABLE users (username varchar(64), password_hash varchar(128), salt varchar(64))"
            )
            cursor.executemany("INSERT INTO users VALUES (%s, %s, %s)", rows)

    def drop(self) -> None:
        with self.connect() as admin, admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {self.database}")


class RedisTests(_ProxiedServer, AuthCase):
    """redis: the machine's Redis on 127.0.0.1:6379, database 3, keys ``ocppgw-e2e-<random>:<cid>``."""

    port = 6379
    database = 3

    def setUp(self) -> None:
        super().setUp()
        self.prefix = "ocppgw-e2e-" + uuid.uuid4().hex[:12]
        admin = redis.Redis(host="127.0.0.1", port=6379, db=self.database)
        self.addCleanup(admin.close)
        for cid in USERS:
            password_hash, salt = hashed(RIGHT)
            admin.hset(f"{self.prefix}:{cid}", mapping={"password_hash": password_hash, "salt": salt})
        self.addCleanup(lambda: admin.delete(*(f"{self.prefix}:{cid}" for cid in USERS)))

    def authentication(self) -> str:
        return (
            f"[authentication]\nbackend = redis\nserver = 127.0.0.1:{self.proxy.port}\n"
            f"database = {self.database}\n{HASHING}{AUTH_TIMEOUT}"
            f"cmd = HMGET {self.prefix}:${{username}} password_hash salt\n"
        )


SECRET = "an-hs256-secret-of-the-e2e-tests-0123456789"


def token(cid: str, secret: str = SECRET, lifetime: float = 600) -> str:
    """An HS256 token for ``cid`` (claim ``sub``) expiring in ``lifetime`` seconds."""
    return jwt.encode({"sub": cid, "exp": int(time.time() + lifetime)}, secret, algorithm="HS256")


class JwtTests(AuthCase):
    """jwt: the token is the password; a token failing verification is 401 not_authorized."""

    @inlineCallbacks
    def test_hs256_right_wrong_expired_other_cid(self) -> Generator[Deferred[Any], Any, None]:
        """A token for CP001 signed with the secret: in; another secret, expired, for CP002, not a
        token, or none: 401 not_authorized."""
        yield self.gateway(
            f"[authentication]\nbackend = jwt\nalgorithm = hmac-based\nsecret = {SECRET}\n"
            "[authentication.verify_claims]\nsub = ${clientid}\n"
        )
        yield self.connected("CP001", token("CP001"))
        refused = [
            token("CP001", secret=SECRET[::-1]),
            token("CP001", lifetime=-60),
            token("CP002"),
            "not-a-token",
            None,
        ]
        for password in refused:
            self.assertRefused((yield self.refused("CP001", password)), 401, b"not_authorized")

    @inlineCallbacks
    def test_jwks_down_at_start_then_up(self) -> Generator[Deferred[Any], Any, None]:
        """JWKS endpoint not answering at start-up (no keys): 503 within request_timeout + 1 s; once
        it serves the key, the next fetch (its retry) lets a signed token in."""
        server = AuthServer()
        server.start()
        yield server.stop()  # a port of our own, refusing connections for now
        self.addCleanup(server.stop)
        key = ec.generate_private_key(ec.SECP256R1())
        yield self.gateway(
            f"[authentication]\nbackend = jwt\nuse_jwks = true\nendpoint = {server.url('/jwks')}\n"
            f"refresh_interval = 10s\n{AUTH_TIMEOUT}"
        )
        signed = jwt.encode({"sub": "CP001"}, key, algorithm="ES256", headers={"kid": "k1"})
        began = reactor.seconds()
        self.assertRefused((yield self.refused("CP001", signed)), *UNAVAILABLE)
        self.assertLess(reactor.seconds() - began, TIMEOUT + 1)
        server.reply = jwks_reply(jwk(key, "k1"))
        server.start()
        backend = self.gw.service.auth_service.backend  # type: ignore[union-attr]
        yield poll_until(lambda: backend._source.keys(), timeout=15)  # its retry, at most 10 s away
        yield self.connected("CP001", signed)
