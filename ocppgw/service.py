"""The running gateway: MQTT link, gateway registry and WebSocket listeners, started and stopped in order."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from ocppgw.auth import AllowAll, IAuthenticator
from ocppgw.bridge import Gateway, node_will
from ocppgw.config import GatewayConfig, ListenerSection
from ocppgw.metrics import Metrics
from ocppgw.mqtt.link import IMqttLink, PahoThreadLink
from ocppgw.ocpp.schemas import SchemaRegistry
from ocppgw.tls import listener_options
from ocppgw.ws.factory import OcppServerFactory


class GatewayService(MultiService):
    """Binds the listeners before privileges are dropped and shuts down without losing accepted messages."""

    _log = Logger()

    def __init__(
        self,
        config: GatewayConfig,
        reactor: Any,
        schemas: SchemaRegistry | None = None,
        link: IMqttLink | None = None,
        authenticator: IAuthenticator | None = None,
        tls_options: dict[str, Any] | None = None,
    ) -> None:
        """``tls_options`` holds ``CertificateOptions`` per wss listener (``wss.<name>``), as
        ``ocppgw.tls.listener_options`` makes them; they are made here when not given."""
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.tls_options = tls_options if tls_options is not None else listener_options(config)
        self.metrics = Metrics()
        self.link = (
            link
            if link is not None
            else PahoThreadLink(reactor, config.mqtt, self.metrics, will=node_will(config))
        )
        self.gateway = Gateway(config, self.link, reactor, self.metrics, authenticator or AllowAll(), schemas)
        self.factories = {
            listener: OcppServerFactory(self.gateway, listener, config.gateway, self.metrics)
            for listener in config.listeners
        }
        self.ports: dict[str, IListeningPort] = {}

    def privilegedStartService(self) -> None:
        """Bind every listener now, so a port in use stops start-up with one line per listener."""
        problems = []
        for listener, factory in self.factories.items():
            d = _endpoint(self.reactor, listener, self.tls_options).listen(factory)
            results: list[Any] = []
            d.addBoth(results.append)
            outcome = results[0] if results else None
            if IListeningPort.providedBy(outcome):
                self.ports[f"{listener.kind}.{listener.name}"] = outcome
            else:
                reason = outcome.getErrorMessage() if outcome is not None else "no answer"
                problems.append(
                    f"[listeners.{listener.kind}.{listener.name}] bind: cannot listen on "
                    f"{listener.host}:{listener.port}: {reason}"
                )
        if problems:
            for port in self.ports.values():
                port.stopListening()
            sys.stderr.write("".join(f"{self.config.source}: {line}\n" for line in problems))
            raise SystemExit(1)
        super().privilegedStartService()

    def startService(self) -> None:
        if not self.ports:
            self.privilegedStartService()
        super().startService()
        self.link.start()
        for name, port in self.ports.items():
            address = port.getHost()
            self._log.info(
                "listener {name} on {host}:{port}", name=name, host=address.host, port=address.port
            )

    @inlineCallbacks
    def stopService(self) -> Deferred[None]:
        """Stop accepting, close charge points with 1001, flush what MQTT accepted, then disconnect."""
        yield maybeDeferred(super().stopService)
        yield DeferredList([maybeDeferred(port.stopListening) for port in self.ports.values()])
        self.ports.clear()
        self.gateway.shutdown()
        yield self.link.stop(self.config.gateway.shutdown_timeout)


def _endpoint(reactor: Any, listener: ListenerSection, tls_options: dict[str, Any]) -> Any:
    if listener.tls is not None:  # listenSSL takes IPv4 and IPv6 interfaces alike
        options = tls_options[f"{listener.kind}.{listener.name}"]
        return SSL4ServerEndpoint(reactor, listener.port, options, interface=listener.host)
    if ":" in listener.host:
        return TCP6ServerEndpoint(reactor, listener.port, interface=listener.host)
    return TCP4ServerEndpoint(reactor, listener.port, interface=listener.host)
