"""``redis``: one ``HGET``/``HMGET`` per handshake, with redis-py's blocking client.

The blocking client runs in a bounded thread pool of this backend's own (``lookup.BlockingPool``),
with socket and connect timeouts of ``request_timeout``. redis-py's asyncio client would need an
asyncio event loop, and the gateway runs Twisted's default reactor: bridging the two costs a loop
thread anyway, and the pooled blocking client is the same code path as the other database backends.
A connection the server dropped (restart) is retried once on a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ocppgw.auth import template
from ocppgw.auth.hashing import HashingPool
from ocppgw.auth.lookup import RecordBackend, Verify, decide, hashing_pool, server_address
from ocppgw.auth.pool import BlockingPool
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Credentials, Decision, IAuthenticator

FIELDS = ("password_hash", "password", "salt", "is_superuser", "clientid_override")
DEFAULT_PORT = 6379


@dataclass(frozen=True)
class RedisCommand:
    """A checked ``cmd``: ``HGET``/``HMGET``, the key template, the fields in reply order."""

    name: str
    key: str
    fields: tuple[str, ...]


def parse_cmd(cmd: str) -> RedisCommand:
    """``cmd`` as the reference accepts it (A.6), or ValueError with the reason: HGET or HMGET (any
    case), a key template, fields among ``FIELDS``, one of password_hash/password, HGET one field."""
    tokens = cmd.split()
    if not tokens or tokens[0].upper() not in ("HGET", "HMGET"):
        raise ValueError("only HGET and HMGET are supported")
    name = tokens[0].upper()
    if len(tokens) < 3:
        raise ValueError(f"{name} needs a key and at least one field")
    key, fields = tokens[1], tuple(tokens[2:])
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise ValueError(f"unknown fields {', '.join(unknown)} (allowed: {', '.join(FIELDS)})")
    if name == "HGET" and len(fields) != 1:
        raise ValueError("HGET takes exactly one field")
    if "password_hash" not in fields and "password" not in fields:
        raise ValueError("one of the fields password_hash or password is required")
    return RedisCommand(name, key, fields)


def client(section: AuthenticationSection) -> Any:
    """A redis-py client (its own connection pool of ``pool_size``); TLS when a CA or client certificate
    is set, the certificate and host name checked when ``ssl_verify``."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    host, port = server_address(section.server, DEFAULT_PORT)
    options: dict[str, Any] = {}
    if section.ssl_cacertfile or section.ssl_certfile:
        options.update(
            ssl=True,
            ssl_ca_certs=str(section.ssl_cacertfile) if section.ssl_cacertfile else None,
            ssl_certfile=str(section.ssl_certfile) if section.ssl_certfile else None,
            ssl_keyfile=str(section.ssl_keyfile) if section.ssl_keyfile else None,
            ssl_cert_reqs="required" if section.ssl_verify else "none",
            ssl_check_hostname=section.ssl_verify,
        )
    return redis.Redis(
        host=host,
        port=port,
        db=int(section.database or 0),
        username=section.username or None,
        password=section.password or None,
        socket_timeout=section.request_timeout,
        socket_connect_timeout=section.request_timeout,
        retry=Retry(NoBackoff(), 1),  # one retry: a pooled connection the server dropped
        max_connections=max(1, section.pool_size),
        **options,
    )


@implementer(IAuthenticator)
class RedisAuthenticator(RecordBackend):
    """The hash fields of ``cmd``'s key decide (``lookup.decide``); no such key: ignore."""

    backend = "redis"

    def __init__(
        self,
        section: AuthenticationSection,
        reactor: Any,
        pool: BlockingPool,
        verify: Verify,
        redis: Any,
        hashing: HashingPool | None = None,
    ) -> None:
        super().__init__(section, reactor, verify, hashing)
        self._command = parse_cmd(section.cmd)
        self._pool = pool
        self._redis = redis

    def start(self) -> None:
        super().start()
        self._pool.start()

    def stop(self) -> Deferred[None]:
        hashing = super().stop()
        d = self._pool.stop().addCallback(lambda _: hashing)
        d.addCallback(lambda _: self._redis.close())
        d.addCallback(lambda _: None)
        return d

    def _lookup(self, credentials: Credentials) -> Deferred[Decision]:
        key = template.render_bytes(self._command.key, credentials)
        d = self._pool.run(self._timeout, self._fetch, key)
        d.addCallback(self._decide, credentials.password)
        return d

    def _fetch(self, key: bytes) -> dict[str, Any]:
        fields = self._command.fields
        if self._command.name == "HGET":
            values = [self._redis.hget(key, fields[0])]
        else:
            values = self._redis.hmget(key, list(fields))
        return {field: value for field, value in zip(fields, values, strict=True) if value is not None}

    def _decide(self, found: dict[str, Any], password: bytes) -> Deferred[Decision]:
        return decide(found, password, self._verify) if found else succeed(Decision.ignore())


def make(section: AuthenticationSection, reactor: Any, data_dir: Path) -> IAuthenticator:
    """The ``redis`` backend of ``section`` (``redis_type = single``)."""
    pool = BlockingPool(reactor, "ocppgw-auth-redis", section.pool_size)
    hashing = hashing_pool(section, reactor)
    return RedisAuthenticator(section, reactor, pool, hashing.check, client(section), hashing)
