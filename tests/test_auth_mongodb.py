"""The mongodb backend without a server: the filter, the document mapping (A.7) on a fake collection,
and a server that is not there (UNAVAILABLE within request_timeout)."""

from __future__ import annotations

import socket
from collections.abc import Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import Clock
from twisted.trial import unittest

from ocppgw.auth.mongodb import MongoAuthenticator, client, render_filter
from ocppgw.auth.pool import BlockingPool
from ocppgw.core.ports import Decision, Outcome
from tests.support_lookup import SALT, InlinePool, credentials, fake_verify, section, sha256_suffix

FILTER = {"username": "${username}", "station": "${clientid}"}


class FakeCollection:
    """``find_one`` over a list of documents, matching every key of the filter."""

    def __init__(self, documents: list[dict[str, Any]]) -> None:
        self.documents = documents
        self.filters: list[dict[str, str]] = []

    def find_one(self, filter_: dict[str, str]) -> dict[str, Any] | None:
        self.filters.append(filter_)
        return next((d for d in self.documents if all(d.get(k) == v for k, v in filter_.items())), None)


class FakeClient:
    def __init__(self, collection: FakeCollection) -> None:
        self.collection = collection
        self.closed = False

    def __getitem__(self, database: str) -> dict[str, FakeCollection]:
        return {"users": self.collection}

    def close(self) -> None:
        self.closed = True


class MongoAuthenticatorTests(unittest.TestCase):
    def setUp(self) -> None:
        self.collection = FakeCollection(
            [{"username": "alice", "station": "CP1", "pw": sha256_suffix(b"secret"), "s": SALT, "su": True}]
        )
        self.pool = InlinePool()
        self.verify, _ = fake_verify()
        self.clock = Clock()

    def backend(self, **fields: Any) -> MongoAuthenticator:
        options = {
            "collection": "users",
            "filter": FILTER,
            "password_hash_field": "pw",
            "salt_field": "s",
            "is_superuser_field": "su",
        }
        s = section("mongodb", **{**options, **fields})
        backend = MongoAuthenticator(
            s, self.clock, self.pool, self.verify, lambda: FakeClient(self.collection)
        )
        backend.start()
        return backend

    def decide(self, backend: MongoAuthenticator, **presented: Any) -> Decision:
        return self.successResultOf(backend.authenticate(credentials(**presented)))

    def test_render_filter(self) -> None:
        """Placeholders in the filter's values are filled in; non-UTF-8 gives None."""
        self.assertEqual(render_filter(FILTER, credentials()), {"username": "alice", "station": "CP1"})
        self.assertIsNone(render_filter({"p": "${password}"}, credentials(password=b"\xff")))

    def test_right_wrong_unknown(self) -> None:
        """Right password: allow (superuser); wrong: bad_username_or_password; no document: ignore."""
        backend = self.backend()
        self.assertEqual(self.decide(backend), Decision.allow(is_superuser=True))
        self.assertEqual(self.decide(backend, password=b"wrong"), Decision.deny("bad_username_or_password"))
        self.assertEqual(self.decide(backend, username="bob"), Decision.ignore())
        self.assertEqual(self.collection.filters[0], {"username": "alice", "station": "CP1"})

    def test_missing_fields(self) -> None:
        """No hash field: UNAVAILABLE (as the reference); no salt field: ``""``."""
        self.assertEqual(
            self.decide(self.backend(password_hash_field="nosuch")),
            Decision.unavailable("mongodb: no field 'nosuch'"),
        )
        self.collection.documents[0].update(pw=sha256_suffix(b"secret", ""), s=None)
        del self.collection.documents[0]["s"]
        self.assertEqual(self.decide(self.backend()), Decision.allow(is_superuser=True))

    def test_no_password_and_stop(self) -> None:
        """No Basic password: ignore without a query; stop() closes the client."""
        backend = self.backend()
        self.assertEqual(self.decide(backend, password=None), Decision.ignore())
        self.assertEqual(self.collection.filters, [])
        mongo = backend._client
        self.successResultOf(backend.stop())
        self.assertTrue(mongo.closed)

    def test_timeout(self) -> None:
        """A query with no answer is UNAVAILABLE at request_timeout."""
        self.pool.hang = True
        d = self.backend(request_timeout=2.0).authenticate(credentials())
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d).outcome, Outcome.UNAVAILABLE)


class UnreachableServerTests(unittest.TestCase):
    @inlineCallbacks
    def test_closed_port(self) -> Generator[Deferred[Any], Any, None]:
        """pymongo against a port nobody listens on: UNAVAILABLE within request_timeout + 1 s."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        s = section(
            "mongodb",
            server=f"127.0.0.1:{port}",
            database="db",
            collection="users",
            filter=FILTER,
            request_timeout=0.5,
        )
        pool = BlockingPool(reactor, "test-mongodb", 2)
        verify, _ = fake_verify()
        backend = MongoAuthenticator(s, reactor, pool, verify, lambda: client(s))
        backend.start()
        self.addCleanup(backend.stop)
        began = reactor.seconds()
        decision = yield backend.authenticate(credentials())
        self.assertEqual(decision.outcome, Outcome.UNAVAILABLE)
        self.assertLess(reactor.seconds() - began, 1.5)
