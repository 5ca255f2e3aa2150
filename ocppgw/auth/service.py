"""The configured authenticator as a Twisted service: built from ``[authentication]``, started before
the listeners (its pools and key refreshes begin), stopped after them."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed

from ocppgw.auth import AllowAll
from ocppgw.auth.gate import AuthenticationGate
from ocppgw.config import GatewayConfig
from ocppgw.core.ports import IAuthenticator
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


class AuthenticatorService(Service):
    """Holds the handshakes' authenticator: ``AllowAll`` without ``[authentication]``, else the gate
    in front of the configured backend."""

    name = "authentication"

    def __init__(self, config: GatewayConfig, reactor: Any, metrics: Metrics, data_dir: Path) -> None:
        section = config.authentication
        self.backend: IAuthenticator | None = None
        if section is None:
            self.authenticator: IAuthenticator = AllowAll()
            return
        self.backend = build_backend(config, reactor, data_dir)
        self.authenticator = AuthenticationGate(
            self.backend, section.backend, section.request_timeout, section.cache_ttl, reactor, metrics
        )

    def startService(self) -> None:
        super().startService()
        start = getattr(self.backend, "start", None)
        if start is not None:
            start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stop = getattr(self.backend, "stop", None)
        return maybeDeferred(stop) if stop is not None else succeed(None)
