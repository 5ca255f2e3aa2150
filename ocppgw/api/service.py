"""``ApiService``: the management API's port, a child of ``GatewayService`` when ``[api] enable``.

It binds with the listeners (a port in use is one ``gw.ini: [api] bind: ...`` line that stops
start-up) and, on its first start with no administrator, creates ``admin`` with a random password
written to ``<data_dir>/initial_admin_password``.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger

from ocppgw.api import (
    clients,
    health,
    manage_authn,
    manage_gateway,
    manage_listeners,
    manage_users,
    openapi,
    prometheus,
)
from ocppgw.api.admins import AdminStore
from ocppgw.api.auth import ApiAuth, read_api_keys
from ocppgw.api.context import ApiContext
from ocppgw.api.http import Route
from ocppgw.api.server import make_site
from ocppgw.config import GatewayConfig, problem_line
from ocppgw.tls.pem import TlsConfigError, load_key_pair
from ocppgw.ws.service import cannot_listen, ensure_bound

ROUTE_MODULES = (
    clients,
    health,
    prometheus,
    manage_gateway,
    manage_listeners,
    manage_authn,
    manage_users,
)  # each has routes(context) -> list[Route], served under /api/v5


class ApiService(Service):
    """Serves ``/api/v5``, ``/metrics`` and ``/api-docs`` on ``[api] bind``."""

    name = "api"
    _log = Logger()

    def __init__(self, context: ApiContext, config: GatewayConfig, reactor: Any) -> None:
        self.context = context
        self.section = config.api
        self.source = config.source
        self.reactor = reactor
        self.store = AdminStore(self.context.data_dir)
        self.port: IListeningPort | None = None
        self.auth: ApiAuth | None = None
        self.site: Any = None

    def _build(self) -> str | None:
        """The site, or the problem line of an unreadable bootstrap file."""
        section = self.section
        keys: dict[str, tuple[str, str]] = {}
        if section.bootstrap_file is not None:
            try:
                keys = read_api_keys(section.bootstrap_file)
            except ValueError as e:
                return problem_line(self.source, "api", "bootstrap_file", f"{section.bootstrap_file}: {e}")
        self.auth = ApiAuth(self.store, self.reactor, section.token_ttl, section.login_max_failures, keys)
        routes: list[Route] = self.auth.routes()
        for module in ROUTE_MODULES:
            routes.extend(module.routes(self.context))
        root_routes = prometheus.root_routes(self.context) + health.root_routes(self.context)
        query: dict[str, tuple[str, ...]] = {}
        for module in ROUTE_MODULES:
            query.update(getattr(module, "QUERY_PARAMETERS", {}))
        docs = openapi.routes(routes, root_routes, query)
        self.site = make_site(routes, root_routes + docs, self.auth)
        return None

    def bind(self) -> str | None:
        """Listen now unless already listening; the problem line when that cannot be done."""
        if self.port is not None:
            return None
        problem = self._build() if self.site is None else None
        if problem is not None:
            return problem
        section = self.section
        try:
            if section.certfile is not None and section.keyfile is not None:
                pair = load_key_pair(section.certfile, section.keyfile, section.password)
                options = CertificateOptions(
                    privateKey=pair.key, certificate=pair.chain[0], extraCertChain=pair.chain[1:]
                )
                self.port = self.reactor.listenSSL(section.port, self.site, options, interface=section.host)
            else:
                self.port = self.reactor.listenTCP(section.port, self.site, interface=section.host)
        except TlsConfigError as e:
            return problem_line(self.source, "api", e.key, e.reason)
        except CannotListenError as e:
            return cannot_listen(self.source, "api", section.host, section.port, e)
        return None

    def startService(self) -> None:
        ensure_bound(self.bind)
        super().startService()
        created = self.store.create_initial_admin()
        if created is not None:
            self._log.warn(
                "no API administrator: created 'admin'; its password is in {path} (change it with "
                "ocppgw admins passwd admin)",
                path=str(created),
            )
        assert self.port is not None
        address = self.port.getHost()
        scheme = "https" if self.section.certfile is not None else "http"
        self._log.info(
            "management API on {scheme}://{host}:{port}/", scheme=scheme, host=address.host, port=address.port
        )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self.port = self.port, None
        return maybeDeferred(port.stopListening) if port is not None else succeed(None)
