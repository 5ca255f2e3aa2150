"""The configured authenticator as a Twisted service: built from ``[authentication]``, started before
the listeners (its pools and key refreshes begin), stopped after them."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from ocppgw.auth import AllowAll
from ocppgw.auth.gate import AuthenticationGate
from ocppgw.config import GatewayConfig
from ocppgw.core.ports import Credentials, Decision, IAuthenticator
from ocppgw.metrics import Metrics

# backend -> the module whose make(section, reactor, data_dir) builds it; imported only when chosen,
# so a gateway without a database backend never loads its driver.
BACKENDS = {
    "built_in_database": "ocppgw.auth.builtin",
    "http": "ocppgw.auth.http",
    "jwt": "ocppgw.auth.jwt",
    "postgresql": "ocppgw.auth.sql",
    "mysql": "ocppgw.auth.sql",
    "redis": "ocppgw.auth.redis",
    "mongodb": "ocppgw.auth.mongodb",
}


def build_backend(config: GatewayConfig, reactor: Any, data_dir: Path) -> IAuthenticator:
    """The backend ``[authentication]`` names, not yet started."""
    section = config.authentication
    assert section is not None
    return importlib.import_module(BACKENDS[section.backend]).make(section, reactor, data_dir)


@implementer(IAuthenticator)
class Switchable:
    """What the listeners hold: asks whichever authenticator is current, so the management API can
    replace it between two handshakes (``AuthenticatorService.swap``)."""

    def __init__(self, current: IAuthenticator) -> None:
        self.current = current

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        return self.current.authenticate(credentials)


class AuthenticatorService(Service):
    """Holds the handshakes' authenticator: ``AllowAll`` without ``[authentication]``, else the gate
    in front of the configured backend; ``swap`` replaces it at run time."""

    name = "authentication"
    _log = Logger()

    def __init__(self, config: GatewayConfig, reactor: Any, metrics: Metrics, data_dir: Path) -> None:
        self.reactor, self.metrics, self.data_dir = reactor, metrics, data_dir
        self.backend, current = self._build(config)
        self.authenticator = Switchable(current)

    def _build(self, config: GatewayConfig) -> tuple[IAuthenticator | None, IAuthenticator]:
        section = config.authentication
        if section is None:
            return None, AllowAll()
        backend = build_backend(config, self.reactor, self.data_dir)
        gate = AuthenticationGate(
            backend, section.backend, section.request_timeout, section.cache_ttl, self.reactor, self.metrics
        )
        return backend, gate

    @property
    def allows_all(self) -> bool:
        """Whether every charge point may connect (no ``[authentication]``)."""
        return isinstance(self.authenticator.current, AllowAll)

    def swap(self, config: GatewayConfig) -> Deferred[None]:
        """Authenticate the next handshakes with ``config``'s ``[authentication]`` (None: everyone);
        the old backend is stopped once replaced, the new one started when the service runs."""
        backend, current = self._build(config)
        old, self.backend = self.backend, backend
        self.authenticator.current = current
        if self.running:
            self._start(backend)
        self._log.info(
            "authentication now {backend}",
            backend=config.authentication.backend if config.authentication else "none (every charge point)",
        )
        return self._stop(old)

    @staticmethod
    def _start(backend: IAuthenticator | None) -> None:
        start = getattr(backend, "start", None)
        if start is not None:
            start()

    @staticmethod
    def _stop(backend: IAuthenticator | None) -> Deferred[None]:
        stop = getattr(backend, "stop", None)
        return maybeDeferred(stop) if stop is not None else succeed(None)

    def startService(self) -> None:
        super().startService()
        self._start(self.backend)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self._stop(self.backend)
