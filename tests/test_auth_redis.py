"""The redis backend: ``cmd`` checked as the reference does (A.6), and the reply mapped on a fake client."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from ocppgw.auth.redis import RedisAuthenticator, client, parse_cmd
from ocppgw.core.ports import Decision, Outcome
from tests.support_lookup import SALT, InlinePool, credentials, fake_verify, section, sha256_suffix

CMD = "HMGET mqtt_user:${username} password_hash salt is_superuser"


class ParseCmdTests(unittest.TestCase):
    def test_accepted(self) -> None:
        """HGET/HMGET in any case, a key template, known fields in order."""
        command = parse_cmd("HmGeT mqtt_user:${username} password_hash salt")
        self.assertEqual(
            (command.name, command.key, command.fields),
            ("HMGET", "mqtt_user:${username}", ("password_hash", "salt")),
        )
        self.assertEqual(parse_cmd("hget k password").fields, ("password",))

    def test_refused(self) -> None:
        """Each rule of the reference refuses with its reason."""
        cases = {
            "GET mqtt_user:${username}": "only HGET and HMGET",
            "": "only HGET and HMGET",
            "HMGET key": "needs a key and at least one field",
            "HMGET key password_hash nosuch": "unknown fields nosuch",
            "HGET key password_hash salt": "HGET takes exactly one field",
            "HMGET key salt is_superuser": "one of the fields password_hash or password is required",
        }
        for cmd, reason in cases.items():
            with self.assertRaises(ValueError) as caught:
                parse_cmd(cmd)
            self.assertIn(reason, str(caught.exception), cmd)


class FakeRedis:
    """redis-py's hget/hmget over a dict of hashes, replying bytes as redis-py does."""

    def __init__(self) -> None:
        self.hashes: dict[bytes, dict[str, bytes]] = {}
        self.keys: list[bytes] = []

    def hget(self, key: bytes, field: str) -> bytes | None:
        self.keys.append(key)
        return self.hashes.get(key, {}).get(field)

    def hmget(self, key: bytes, fields: list[str]) -> list[bytes | None]:
        self.keys.append(key)
        return [self.hashes.get(key, {}).get(field) for field in fields]

    def close(self) -> None:
        pass


class RedisAuthenticatorTests(unittest.TestCase):
    def setUp(self) -> None:
        self.redis = FakeRedis()
        self.pool = InlinePool()
        self.verify, _ = fake_verify()
        self.clock = Clock()
        self.redis.hashes[b"mqtt_user:alice"] = {
            "password_hash": sha256_suffix(b"secret").encode(),
            "salt": SALT.encode(),
            "is_superuser": b"1",
        }

    def backend(self, cmd: str = CMD, **fields: Any) -> RedisAuthenticator:
        s = section("redis", cmd=cmd, **fields)
        return RedisAuthenticator(s, self.clock, self.pool, self.verify, self.redis)

    def decide(self, backend: RedisAuthenticator, **presented: Any) -> Decision:
        return self.successResultOf(backend.authenticate(credentials(**presented)))

    def test_right_wrong_unknown(self) -> None:
        """Right password: allow (superuser from "1"); wrong: bad_username_or_password; no key: ignore."""
        backend = self.backend()
        self.assertEqual(self.decide(backend), Decision.allow(is_superuser=True))
        self.assertEqual(self.decide(backend, password=b"wrong"), Decision.deny("bad_username_or_password"))
        self.assertEqual(self.decide(backend, username="bob"), Decision.ignore())

    def test_key_is_bytes(self) -> None:
        """The key is rendered as bytes, so a non-UTF-8 username reaches Redis as sent."""
        self.decide(self.backend(), username="b\udcffob")
        self.assertEqual(self.redis.keys, [b"mqtt_user:b\xffob"])

    def test_hget_and_missing_fields(self) -> None:
        """HGET of one field; nil fields are dropped (no salt: ``""``)."""
        self.redis.hashes[b"u:alice"] = {"password": sha256_suffix(b"secret", "").encode()}
        self.assertEqual(self.decide(self.backend("HGET u:${username} password")), Decision.allow())
        self.assertEqual(self.decide(self.backend("HMGET u:${username} password salt")), Decision.allow())

    def test_no_password(self) -> None:
        """No Basic password: ignore without a command."""
        self.assertEqual(self.decide(self.backend(), password=None), Decision.ignore())
        self.assertEqual(self.redis.keys, [])

    def test_error_and_timeout(self) -> None:
        """A Redis error, and a command with no answer by request_timeout, are UNAVAILABLE."""

        def broken(key: bytes, fields: list[str]) -> list[bytes]:
            raise ConnectionError("Connection refused")

        self.redis.hmget = broken  # type: ignore[method-assign]
        self.assertEqual(
            self.decide(self.backend()), Decision.unavailable("redis: ConnectionError: Connection refused")
        )
        self.pool.hang = True
        d = self.backend(request_timeout=2.0).authenticate(credentials())
        self.clock.advance(2.0)
        self.assertEqual(self.successResultOf(d).outcome, Outcome.UNAVAILABLE)

    def test_client_options(self) -> None:
        """redis-py gets the database number, timeouts, pool size and TLS settings."""
        s = section(
            "redis",
            server="cache:6380",
            database="3",
            password="pw",
            pool_size=4,
            request_timeout=2.0,
            ssl_cacertfile="/ca.pem",
        )
        kwargs = client(s).connection_pool.connection_kwargs
        self.assertEqual(
            (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]), ("cache", 6380, 3, "pw")
        )
        self.assertEqual(
            (kwargs["socket_timeout"], kwargs["socket_connect_timeout"], kwargs["ssl_ca_certs"]),
            (2.0, 2.0, "/ca.pem"),
        )
        self.assertEqual(client(s).connection_pool.max_connections, 4)
