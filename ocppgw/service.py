"""The running gateway: MQTT link, gateway registry and WebSocket listeners, started and stopped in order."""

from __future__ import annotations

import signal
import sys
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from ocppgw.auth import AllowAll
from ocppgw.config import GatewayConfig, ListenerSection
from ocppgw.core.ports import IAuthenticator, IBrokerLink
from ocppgw.core.router import Gateway, node_will
from ocppgw.core.schemas import SchemaRegistry
from ocppgw.metrics import Metrics
from ocppgw.mqtt.link import PahoThreadLink
from ocppgw.mqtt.reactor_link import PahoReactorLink
from ocppgw.tls.listener import ReloadableContextFactory, listener_options, reload_listener_options
from ocppgw.ws.limits import ListenerLimits, limited
from ocppgw.ws.proxy import with_proxy_protocol
from ocppgw.ws.server import OcppServerFactory


class GatewayService(MultiService):
    """Binds the listeners before privileges are dropped and shuts down without losing accepted messages."""

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
    ) -> None:
        """``tls_options`` holds ``CertificateOptions`` per wss listener (``wss.<name>``), as
        ``ocppgw.tls.listener_options`` makes them; they are made here when not given.
        ``sighup``: reload certificates on SIGHUP (twistd; see ``reload_certificates``)."""
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.tls_options = tls_options if tls_options is not None else listener_options(config)
        self.tls_contexts = {name: ReloadableContextFactory(o) for name, o in self.tls_options.items()}
        self.sighup = sighup
        self._previous_sighup: Any = None
        self.metrics = Metrics()
        if link is None:
            link_class = PahoReactorLink if config.mqtt.network_loop == "reactor" else PahoThreadLink
            link = link_class(reactor, config.mqtt, self.metrics, will=node_will(config))
        self.link = link
        self.gateway = Gateway(config, self.link, reactor, self.metrics, authenticator or AllowAll(), schemas)
        self.factories = {
            listener: OcppServerFactory(self.gateway, listener, config.gateway, self.metrics)
            for listener in config.listeners
        }
        self.limits: dict[ListenerSection, ListenerLimits] = {}  # wss: TLS under the limits
        for listener, factory in self.factories.items():
            tls = self.tls_contexts[f"wss.{listener.name}"] if listener.tls is not None else None
            self.limits[listener] = limited(factory, listener, reactor, self.metrics, tls)
        for listener, limits in self.limits.items():
            if listener.proxy_protocol:  # TCP -> limits -> PROXY header -> TLS (wss) -> WebSocket
                with_proxy_protocol(limits, listener, reactor)
        self.ports: dict[str, IListeningPort] = {}

    def privilegedStartService(self) -> None:
        """Bind every listener now, so a port in use stops start-up with one line per listener."""
        problems = []
        for listener, factory in self.limits.items():
            d = _endpoint(self.reactor, listener, self.tls_contexts).listen(factory)
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
        if self.sighup:
            self._install_sighup()
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
        self._restore_sighup()
        yield DeferredList([maybeDeferred(port.stopListening) for port in self.ports.values()])
        self.ports.clear()
        for limits in self.limits.values():
            limits.stop()
        self.gateway.shutdown()
        yield self.link.stop(self.config.gateway.shutdown_timeout)

    def reload_certificates(self) -> list[str]:
        """Re-read every wss listener's certfile, keyfile and cacertfile, and the ``[mqtt]`` TLS files;
        new connections get the new ones.

        Live connections are not touched. A listener (or the broker link) whose files fail keeps the
        old ones and logs one line naming the file; returns those lines.
        """
        problems = reload_listener_options(self.config, self.tls_contexts)
        problems.extend(f"{self.config.source}: {line}" for line in self.link.reload_tls())
        for line in problems:
            self._log.error("certificate reload failed: {problem}", problem=line)
        names = sorted(self.tls_contexts) + (["mqtt"] if self.config.mqtt.tls else [])
        if names and not problems:
            self._log.info("certificates reloaded for {names}", names=", ".join(names))
        return problems

    def _install_sighup(self) -> None:
        """SIGHUP reloads certificates, then calls the handler it replaced (twistd's log rotation)."""
        previous = signal.getsignal(signal.SIGHUP)

        def on_sighup(signum: int, frame: Any) -> None:
            self.reactor.callFromThread(self.reload_certificates)
            if callable(previous):
                previous(signum, frame)

        try:
            signal.signal(signal.SIGHUP, on_sighup)
        except ValueError:  # not the main thread: no signals here
            self._log.warn("SIGHUP certificate reload not installed: not in the main thread")
            return
        self._previous_sighup = (previous,)

    def _restore_sighup(self) -> None:
        if self._previous_sighup is not None:
            (previous,) = self._previous_sighup
            signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)
            self._previous_sighup = None


def _endpoint(reactor: Any, listener: ListenerSection, tls_options: dict[str, Any]) -> Any:
    # wss: TLS is layered under the connection limits by ocppgw.ws.limits.limited, as listenSSL would.
    # backlog: the kernel caps it at net.core.somaxconn.
    endpoint = TCP6ServerEndpoint if ":" in listener.host else TCP4ServerEndpoint
    return endpoint(reactor, listener.port, backlog=listener.backlog, interface=listener.host)
