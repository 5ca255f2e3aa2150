"""The redis backend against the machine's real Redis, behind a TCP proxy the test closes and reopens;
keys under a prefix of the test's own, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Generator
from typing import Any

import redis
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial import unittest

from ocppgw.auth.pool import BlockingPool
from ocppgw.auth.redis import RedisAuthenticator, client
from ocppgw.core.ports import Decision
from tests.support_lookup import SALT, credentials, fake_verify, section, sha256_suffix
from tests.support_proxy import TcpProxy, assert_unavailable_in_time

DATABASE = 3


class RedisTests(unittest.TestCase):
    request_timeout = 1.0

    def setUp(self) -> None:
        self.prefix = "ocppgw-t-" + uuid.uuid4().hex[:12]
        admin = redis.Redis(host="127.0.0.1", port=6379, db=DATABASE)
        self.addCleanup(admin.close)
        admin.hset(
            f"{self.prefix}:alice",
            mapping={"password_hash": sha256_suffix(b"secret"), "salt": SALT, "is_superuser": "1"},
        )
        admin.hset(
            f"{self.prefix}:bob",
            mapping={"password_hash": sha256_suffix(b"hunter2"), "salt": SALT, "is_superuser": 0},
        )
        admin.hset(f"{self.prefix}:nopw", mapping={"salt": SALT})
        self.addCleanup(lambda: admin.delete(*admin.keys(f"{self.prefix}:*")))
        self.proxy = TcpProxy(6379)
        self.proxy.open()
        self.addCleanup(self.proxy.close)

    def backend(self, fields: str = "password_hash salt is_superuser") -> RedisAuthenticator:
        s = section(
            "redis", server=f"127.0.0.1:{self.proxy.port}", database=str(DATABASE),
            cmd=f"HMGET {self.prefix}:${{username}} {fields}", request_timeout=self.request_timeout,
        )  # fmt: skip
        pool = BlockingPool(reactor, "test-redis", s.pool_size)
        verify, _ = fake_verify()
        authenticator = RedisAuthenticator(s, reactor, pool, verify, client(s))
        authenticator.start()
        self.addCleanup(authenticator.stop)
        return authenticator

    @inlineCallbacks
    def test_right_wrong_unknown(self) -> Generator[Deferred[Any], Any, None]:
        """Right password: allow (superuser from "1"); wrong: bad_username_or_password; unknown key and
        no password: ignore; a hash without a password field: deny not_authorized."""
        backend = self.backend()
        self.assertEqual((yield backend.authenticate(credentials())), Decision.allow(is_superuser=True))
        self.assertEqual((yield backend.authenticate(credentials("bob", b"hunter2"))), Decision.allow())
        wrong = yield backend.authenticate(credentials(password=b"wrong"))
        self.assertEqual(wrong, Decision.deny("bad_username_or_password"))
        self.assertEqual((yield backend.authenticate(credentials(username="carol"))), Decision.ignore())
        self.assertEqual((yield backend.authenticate(credentials(password=None))), Decision.ignore())
        self.assertEqual(
            (yield backend.authenticate(credentials(username="nopw"))), Decision.deny("not_authorized")
        )

    @inlineCallbacks
    def test_stopped_then_back(self) -> Generator[Deferred[Any], Any, None]:
        """Redis gone: UNAVAILABLE within request_timeout + 1 s; back: the next handshake is allowed,
        and so is one after a restart that no handshake saw."""
        backend = self.backend()
        self.assertTrue((yield backend.authenticate(credentials())).allowed)
        yield self.proxy.close()
        yield assert_unavailable_in_time(self, backend, credentials(), self.request_timeout + 1)
        self.proxy.open()
        self.assertEqual((yield backend.authenticate(credentials())), Decision.allow(is_superuser=True))
        yield self.proxy.close()
        self.proxy.open()
        self.assertEqual((yield backend.authenticate(credentials())), Decision.allow(is_superuser=True))

    @inlineCallbacks
    def test_hung_server(self) -> Generator[Deferred[Any], Any, None]:
        """A server that accepts but never answers: UNAVAILABLE within request_timeout + 1 s."""
        backend = self.backend()
        self.assertTrue((yield backend.authenticate(credentials())).allowed)
        self.proxy.stall()
        yield assert_unavailable_in_time(self, backend, credentials(), self.request_timeout + 1)
