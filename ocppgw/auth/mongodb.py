"""``mongodb``: one ``find_one`` per handshake, with pymongo in a bounded thread pool of its own.

pymongo is blocking (its monitor threads are its own); ``serverSelectionTimeoutMS``,
``connectTimeoutMS`` and ``socketTimeoutMS`` are ``request_timeout``, so a worker waits no longer than
the handshake does. The client is created at ``start()`` and connects in the background.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

DEFAULT_PORT = 27017


def render_filter(filter_: Mapping[str, str], credentials: Credentials) -> dict[str, str] | None:
    """The filter with its placeholders filled in, or None when a value is not UTF-8 text."""
    rendered = {}
    for key, value in filter_.items():
        text = template.render_text(value, credentials)
        if text is None:
            return None
        rendered[key] = text
    return rendered


def client(section: AuthenticationSection) -> Any:
    """A pymongo client for one server (``mongo_type = single``). TLS when a CA or client certificate
    is set: ``tlsCAFile`` and ``tlsCertificateKeyFile`` (pymongo wants the client key in the
    certificate's file: ``ssl_keyfile`` is not read), invalid certificates allowed unless
    ``ssl_verify``."""
    import pymongo

    host, port = server_address(section.server, DEFAULT_PORT)
    millis = max(1, int(section.request_timeout * 1000))
    options: dict[str, Any] = {}
    if section.username:
        options.update(username=section.username, password=section.password or "")
        if section.auth_source:
            options["authSource"] = section.auth_source
    if section.ssl_cacertfile or section.ssl_certfile:
        options["tls"] = True
        options["tlsAllowInvalidCertificates"] = not section.ssl_verify
        if section.ssl_cacertfile:
            options["tlsCAFile"] = str(section.ssl_cacertfile)
        if section.ssl_certfile:
            options["tlsCertificateKeyFile"] = str(section.ssl_certfile)
    return pymongo.MongoClient(
        host=host,
        port=port,
        directConnection=True,
        serverSelectionTimeoutMS=millis,
        connectTimeoutMS=millis,
        socketTimeoutMS=millis,
        maxPoolSize=max(1, section.pool_size),
        appname="ocppgw",
        **options,
    )


@implementer(IAuthenticator)
class MongoAuthenticator(RecordBackend):
    """The first document matching the filter decides; its hash field missing is UNAVAILABLE (as the
    reference, unlike SQL), its salt field missing is ``""``."""

    backend = "mongodb"

    def __init__(
        self,
        section: AuthenticationSection,
        reactor: Any,
        pool: BlockingPool,
        verify: Verify,
        client_factory: Callable[[], Any],
        hashing: HashingPool | None = None,
    ) -> None:
        super().__init__(section, reactor, verify, hashing)
        self._section = section
        self._pool = pool
        self._client_factory = client_factory
        self._client: Any = None
        self._collection: Any = None

    def start(self) -> None:
        super().start()
        self._pool.start()
        if self._client is None:
            self._client = self._client_factory()
            self._collection = self._client[self._section.database][self._section.collection]

    def stop(self) -> Deferred[None]:
        mongo, self._client = self._client, None
        hashing = super().stop()
        d = self._pool.stop().addCallback(lambda _: hashing)
        if mongo is not None:
            d.addCallback(lambda _: mongo.close())
        d.addCallback(lambda _: None)
        return d

    def _lookup(self, credentials: Credentials) -> Deferred[Decision]:
        rendered = render_filter(self._section.filter, credentials)
        if rendered is None:  # no document can hold it: none matches
            return succeed(Decision.ignore())
        if self._collection is None:
            raise RuntimeError("not started")
        d = self._pool.run(self._timeout, self._collection.find_one, rendered)
        d.addCallback(self._decide, credentials.password)
        return d

    def _decide(self, document: Mapping[str, Any] | None, password: bytes) -> Deferred[Decision]:
        if document is None:
            return succeed(Decision.ignore())
        section = self._section
        if section.password_hash_field not in document:
            return succeed(Decision.unavailable(f"mongodb: no field {section.password_hash_field!r}"))
        record = {
            "password_hash": document[section.password_hash_field],
            "salt": document.get(section.salt_field, ""),
            "is_superuser": document.get(section.is_superuser_field),
        }
        return decide(record, password, self._verify)


def make(section: AuthenticationSection, reactor: Any, data_dir: Path) -> IAuthenticator:
    """The ``mongodb`` backend of ``section`` (``mongo_type = single``)."""
    pool = BlockingPool(reactor, "ocppgw-auth-mongodb", section.pool_size)
    hashing = hashing_pool(section, reactor)
    return MongoAuthenticator(section, reactor, pool, hashing.check, lambda: client(section), hashing)
