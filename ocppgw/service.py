"""The running gateway: a service tree of the MQTT link and one service per listener over the core.

Children start in dependency order (the link, then the listeners). Stopping is sequenced here
rather than left to ``MultiService``, which stops every child at once: stop accepting, close the
charge points with 1001 and publish them disconnected, mark the node offline, then wait up to
``shutdown_timeout`` for the broker's acknowledgements and disconnect.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from prometheus_client import generate_latest
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.logger import Logger

from ocppgw.api.context import ApiContext
from ocppgw.api.directory import Directory
from ocppgw.api.service import ApiService
from ocppgw.auth.service import AuthenticatorService
from ocppgw.config import GatewayConfig, ListenerSection, problem_line
from ocppgw.core.ports import IAuthenticator, IBrokerLink
from ocppgw.core.router import Router
from ocppgw.core.schemas import SchemaRegistry
from ocppgw.logtext import TwistdLogging
from ocppgw.memory import InflightBudget, MemoryTrimmer
from ocppgw.metrics import Metrics
from ocppgw.mqtt.service import LinkService, broker_link
from ocppgw.runtime import RuntimeService
from ocppgw.signals import Sighup
from ocppgw.tls.listener import (
    ReloadableContextFactory,
    certificate_options,
    listener_options,
    reload_listener_options,
)
from ocppgw.tls.pem import TlsConfigError
from ocppgw.ws.service import ListenerService
from ocppgw.ws.stack import listener_stack


class StartupError(Exception):
    """The gateway cannot start; ``problems`` holds one ``gw.ini: [section] key: reason`` line each.

    An ordinary exception, not ``SystemExit``: a daemonised twistd reports it to the waiting parent
    and removes its pidfile only for an ``Exception``. That parent prints at most 100 bytes of it,
    so its text leads with the first problem's section and key, without the file's path.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        first = problems[0].removeprefix(f"{source}: ")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more)
        self.problems = problems


class GatewayService(TwistdLogging, MultiService):
    """The gateway: builds the core and its adapters, binds before privileges are dropped."""

    _log = Logger()

    def __init__(
        self,
        config: GatewayConfig,
        reactor: Any,
        schemas: SchemaRegistry | None = None,
        link: IBrokerLink | None = None,
        authenticator: IAuthenticator | None = None,
        tls_options: dict[str, Any] | None = None,
        sighup: bool = False,
        inherited: Mapping[str, int] | None = None,
        gc_policy: bool = False,
    ) -> None:
        """``tls_options`` holds ``CertificateOptions`` per wss listener (``wss.<name>``), as
        ``ocppgw.tls.listener.listener_options`` makes them; they are made here when not given.
        ``sighup``: reload certificates on SIGHUP (twistd; see ``reload_certificates``).
        ``inherited``: a worker's listening sockets by listener label, bound by its master.
        ``gc_policy``: freeze long-lived objects out of the garbage collector's view (twistd and
        workers; it acts on the whole process, see ``ocppgw.runtime``)."""
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.sighup = sighup
        self.inherited = dict(inherited or {})
        self._sighup = Sighup(reactor, lambda: self.reload_certificates())
        self.metrics = Metrics()
        options = tls_options if tls_options is not None else listener_options(config)
        self.tls_contexts = {name: ReloadableContextFactory(o) for name, o in options.items()}
        self.link = link if link is not None else broker_link(config, reactor, self.metrics)
        self.router = Router(config, self.link, reactor, self.metrics, schemas)
        self.directory = Directory(self)  # answers the other members' requests, with or without the API
        # one count of bytes being received for every listener; large ones freed give memory back
        self.trimmer = MemoryTrimmer(reactor, metrics=self.metrics)
        self.inflight = InflightBudget(config.gateway.max_inflight_bytes, self.trimmer)
        self.metrics.gauge("inflight_bytes", lambda: self.inflight.used)
        self.link_service = LinkService(self.link, config.gateway.shutdown_timeout)
        self.link_service.setServiceParent(self)
        self.runtime = RuntimeService(reactor, self.metrics, gc_policy)
        self.runtime.setServiceParent(self)
        self.auth_service = AuthenticatorService(config, reactor, self.metrics, config.gateway.data_dir)
        self.auth_service.setServiceParent(self)
        self.authenticator = authenticator or self.auth_service.authenticator
        # [gateway] enable, or PUT /gateways/ocpp/enable/{true|false} (set_enabled): while disabled
        # the listeners are built but are not children, so nothing binds them
        self.enabled = config.gateway.enable
        self.listeners: list[ListenerService] = []
        for listener in config.listeners:
            service = self._listener_service(listener)
            if self.enabled:
                service.setServiceParent(self)
        self.api: ApiService | None = None
        if config.api.enable:
            self.api = ApiService(ApiContext.of(self), config, reactor)
            self.api.setServiceParent(self)

    def _listener_service(self, listener: ListenerSection) -> ListenerService:
        """A service for ``listener``, its stack built by ``listener_stack``; not yet bound nor a child."""
        stack = listener_stack(
            listener,
            self.config.gateway,
            self.router,
            self.authenticator,
            self.metrics,
            self.reactor,
            self.tls_contexts.get(listener.label),
            self.inflight,
        )
        fd = self.inherited.get(listener.label)
        service = ListenerService(listener, stack, self.reactor, self.config.source, fd)
        self.listeners.append(service)
        return service

    def privilegedStartService(self) -> None:
        """Bind every listener now, so a port in use stops start-up with one line per listener."""
        binders: list[ListenerService | ApiService] = [*self.listeners] if self.enabled else []
        if self.api is not None:
            binders.append(self.api)
        problems = [problem for problem in (s.bind() for s in binders) if problem is not None]
        if problems:
            for service in binders:
                service.stopService()
            for line in problems:
                self._log.critical("{problem}", problem=line)
            raise StartupError(self.config.source, problems)
        super().privilegedStartService()

    def startService(self) -> None:
        unbound = self.api is not None and self.api.port is None
        if unbound or (self.enabled and not all(s.port is not None for s in self.listeners)):
            self.privilegedStartService()
        super().startService()
        if self.sighup:
            self._sighup.install()
        if self.auth_service.allows_all:
            public = [s.listener.label for s in self.listeners if not _loopback(s.listener.host)]
            if public:
                self._log.warn(
                    "no [authentication]: every charge point may connect, and listeners {listeners} "
                    "are reachable from other hosts",
                    listeners=", ".join(public),
                )

    @inlineCallbacks
    def stopService(self) -> Deferred[None]:
        """Stop accepting, close charge points with 1001, flush what MQTT accepted, then disconnect."""
        Service.stopService(self)
        self._sighup.restore()
        api = [self.api.stopService()] if self.api is not None else []
        yield DeferredList([service.stopService() for service in self.listeners] + api)
        self.router.shutdown()
        self.trimmer.stop()
        yield DeferredList([self.link_service.stopService(), self.auth_service.stopService()])
        self.runtime.stopService()
        lost = len(self.router.states)
        if lost:
            self.metrics.inc("presence_lost_on_stop", lost)
            self._log.warn(
                "{count} presence messages not published before the broker link stopped", count=lost
            )

    # -- changed at run time by the management API (ocppgw.api.manage_*) ---------------------

    # why listeners cannot be added, changed or removed at run time; None: they can
    fixed_listeners: str | None = None

    def reconfigure(self, config: GatewayConfig) -> None:
        """Take ``config`` (the API changed gateway-level keys) for the charge points that connect next."""
        self.config = config
        self.router.reconfigure(config)

    def swap_authenticator(self, config: GatewayConfig) -> Deferred[None]:
        """Use ``config``'s ``[authentication]`` from now on; fires once the replaced one stopped."""
        return self.auth_service.swap(config)

    def metrics_text(self) -> bytes:
        """The registry in Prometheus text (``/metrics``)."""
        return generate_latest(self.metrics.registry)

    def listener(self, label: str) -> ListenerService | None:
        """The listener service labelled ``<kind>.<name>``, None when there is none."""
        return next((s for s in self.listeners if s.listener.label == label), None)

    def add_listener(self, listener: ListenerSection) -> str | None:
        """Build ``listener`` and, when the gateway runs and is enabled, start it listening.

        Returns the problem line (TLS files, bind) when it cannot, and then nothing is kept."""
        if listener.tls is not None:
            try:
                options = certificate_options(listener.tls)
            except TlsConfigError as e:
                return problem_line(self.config.source, listener.section, e.key, e.reason)
            self.tls_contexts[listener.label] = ReloadableContextFactory(options)
        service = self._listener_service(listener)
        problem = service.bind() if self.running and self.enabled else None
        if problem is not None:
            self._forget(service)
            return problem
        if self.enabled or not self.running:
            service.setServiceParent(self)  # a running parent starts it: already bound
        return None

    @inlineCallbacks
    def remove_listener(self, label: str, reason: str = "listener removed") -> Deferred[None]:
        """Stop the listener ``label`` and close its charge points with 1001 and ``reason``."""
        service = self.listener(label)
        if service is None:
            return
        self._forget(service)
        yield self._stop_listener(service, reason)

    @inlineCallbacks
    def set_enabled(self, enabled: bool) -> Deferred[list[str]]:
        """Disabled: every listener stops and its charge points are closed with 1001 "gateway
        disabled"; enabled: they listen again. Returns the problem lines of listeners that cannot."""
        problems: list[str] = []
        if enabled == self.enabled:
            return problems
        self.enabled = enabled
        if not self.running:
            return problems
        if not enabled:
            yield DeferredList([self._stop_listener(s, "gateway disabled") for s in self.listeners])
            return problems
        for service in self.listeners:
            problem = service.bind()
            if problem is not None:
                problems.append(problem)
            elif service.parent is None:
                service.setServiceParent(self)  # added while disabled
            else:
                service.startService()
        return problems

    def _stop_listener(self, service: ListenerService, reason: str) -> Deferred[None]:
        service.close_connections(1001, reason)
        return service.stopService()

    def _forget(self, service: ListenerService) -> None:
        """Take ``service`` out of the tree without stopping it (the caller does, in order)."""
        self.listeners.remove(service)
        self.tls_contexts.pop(service.listener.label, None)
        if service.parent is self:
            self.services.remove(service)
            self.namedServices.pop(service.name, None)
            service.parent = None

    def reload_certificates(self) -> list[str]:
        """Re-read every wss listener's certfile, keyfile and cacertfile, and the ``[mqtt]`` TLS files;
        new connections get the new ones.

        Live connections are not touched. A listener (or the broker link) whose files fail keeps the
        old ones and logs one line naming the file; returns those lines.
        """
        problems = reload_listener_options(self.config, self.tls_contexts)
        source = self.config.source
        problems.extend(problem_line(source, "mqtt", key, reason) for key, reason in self.link.reload_tls())
        for line in problems:
            self._log.error("certificate reload failed: {problem}", problem=line)
        names = sorted(self.tls_contexts) + (["mqtt"] if self.config.mqtt.tls else [])
        if names and not problems:
            self._log.info("certificates reloaded for {names}", names=", ".join(names))
        return problems


def _loopback(host: str) -> bool:
    """Whether a listener bound to ``host`` is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
