"""``python -m ocppgw.worker``: one worker of a node with ``[gateway] workers`` > 1, spawned by the
master (``ocppgw.workers.master``), never by hand.

It reads the same gw.ini (and the API's overrides), runs a normal ``GatewayService`` as member
``<node>-w<i>`` on the listening sockets it inherited, logs one record per event on stderr (its
text formatted here, its scalar fields kept: ``ocppgw.logtext.worker_record``) for the master to
re-emit, and answers the master on the control channel (fd 3). It drains and exits when the master
says ``stop``, on SIGTERM or SIGINT, and when the master goes away (the channel closes). SIGHUP is
ignored: the master relays reloads.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from dataclasses import replace
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import Factory
from twisted.logger import FileLogObserver, Logger, globalLogBeginner

from ocppgw.config import GatewayConfig, load_config
from ocppgw.logtext import worker_record
from ocppgw.openfiles import raise_soft_limit
from ocppgw.workers import worker_config
from ocppgw.workers.control import ControlChannel, Handler
from ocppgw.workers.log_pipe import LogPipe

_log = Logger()


def _listener_fd(text: str) -> tuple[str, int]:
    label, _, fd = text.rpartition("=")
    if not label or not fd.isdigit():
        raise argparse.ArgumentTypeError(f"expected <label>=<fd>, got {text!r}")
    return label, int(fd)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ocppgw.worker", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--control", type=int, required=True, help="fd of the control channel")
    parser.add_argument("--listener", type=_listener_fd, action="append", default=[], help="<label>=<fd>")
    return parser.parse_args(argv)


def own_config(config: GatewayConfig, index: int, inherited: dict[str, int]) -> GatewayConfig:
    """``config`` as worker ``index`` runs it, with only the listeners whose sockets it inherited (gw.ini
    may have changed since the master bound them: those it did not bind wait for a restart)."""
    mine = worker_config(config, index)
    listeners = tuple(x for x in mine.listeners if x.label in inherited)
    for listener in mine.listeners:
        if listener.label not in inherited:
            _log.warn(
                "listener {name} is not bound by the master: it starts with the gateway", name=listener.label
            )
    return replace(mine, listeners=listeners)


class WorkerControl:
    """The operations the master calls on this worker's ``GatewayService``."""

    def __init__(self, service: Any, index: int, reactor: Any) -> None:
        self.service = service
        self.index = index
        self.reactor = reactor

    def handlers(self) -> dict[str, Handler]:
        return {
            "metrics": self.metrics,
            "status": self.status,
            "reload_certificates": self.service.reload_certificates,
            "reload_config": self.reload_config,
            "set_enabled": self.service.set_enabled,
            "stop": self.stop,
        }

    def metrics(self) -> str:
        return str(self.service.metrics_text().decode("utf-8"))

    def status(self) -> dict[str, Any]:
        """The member, its broker link and its listeners (``/gateways``, ``/status``)."""
        service = self.service
        listeners = {
            s.listener.label: {"running": s.port is not None, "connections": s.connections}
            for s in service.listeners
        }
        return {
            "member": service.config.gateway.member,
            "link": bool(service.link.connected),
            "enabled": service.enabled,
            "listeners": listeners,
        }

    def reload_config(self, authentication: bool = False) -> Any:
        """gw.ini and the overrides again (the API changed them): gateway-level keys for the next
        charge points and, with ``authentication``, the authenticator."""
        service = self.service
        fresh = load_config(service.config.source)
        config = replace(worker_config(fresh, self.index), listeners=service.config.listeners)
        service.reconfigure(config)
        if authentication:
            return service.swap_authenticator(config)
        return None

    def stop(self) -> None:
        """Drain and exit (after answering)."""
        self.reactor.callLater(0, stop_reactor, self.reactor)


def main(argv: list[str] | None = None, reactor: Any = None) -> int:
    """Run one worker until stopped; its exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    globalLogBeginner.beginLoggingTo([FileLogObserver(LogPipe(reactor), worker_record)])
    raise_soft_limit()
    from ocppgw.service import GatewayService
    from ocppgw.tap import Options

    options = Options()
    options.parseOptions(["--config", args.config])  # a bad gw.ini: its lines on stderr, exit 1
    inherited = dict(args.listener)
    config = own_config(options.gateway_config, args.index, inherited)
    service = GatewayService(
        config, reactor, schemas=options.schemas, tls_options=options.tls_options, inherited=inherited,
        gc_policy=True,
    )
    control = WorkerControl(service, args.index, reactor)
    channel = ControlChannel(control.handlers(), on_lost=lambda: _master_gone(reactor))
    factory = Factory()
    factory.buildProtocol = lambda addr: channel  # type: ignore[method-assign]
    reactor.adoptStreamConnection(args.control, socket.AF_UNIX, factory)
    os.close(args.control)  # the reactor holds a duplicate
    exit_code = [0]

    def start() -> None:
        try:
            service.startService()
        except Exception:
            _log.failure("worker {member} could not start", member=config.gateway.member)
            exit_code[0] = 1
            stop_reactor(reactor)
            return
        channel.notify("ready")

    def stop() -> Any:
        return service.stopService() if service.running else None

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return exit_code[0]


def stop_reactor(reactor: Any) -> None:
    """Stop unless already stopping (a signal and the master's ``stop`` may both come)."""
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def _master_gone(reactor: Any) -> None:
    _log.warn("the master closed the control channel: stopping")
    stop_reactor(reactor)


if __name__ == "__main__":
    raise SystemExit(main())
