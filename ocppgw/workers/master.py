"""``MasterService``: the twistd process of a node with ``[gateway] workers`` > 1.

It binds every listener (``sockets.reuseport_group``) and the management API before privileges are
dropped (a port in use stops start-up with the one problem line), spawns the workers and restarts
one that dies, and stands for all of them where the operator reaches the node: the API
(``ManagedGateway``), ``/metrics`` (summed), SIGHUP (certificates reloaded in every worker) and
SIGTERM (every worker drains as one gateway does, then the master exits).
"""

from __future__ import annotations

import socket
from dataclasses import replace
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, fail, gatherResults, inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ocppgw.api.context import ApiContext
from ocppgw.api.directory import Directory
from ocppgw.api.service import ApiService
from ocppgw.config import GatewayConfig, ListenerSection
from ocppgw.core.router import Router
from ocppgw.logtext import TwistdLogging
from ocppgw.metrics import Metrics
from ocppgw.mqtt.service import LinkService, broker_link
from ocppgw.service import StartupError
from ocppgw.signals import Sighup
from ocppgw.workers import master_client_id, member_name
from ocppgw.workers.exposition import merge
from ocppgw.workers.process import WorkerProcess, exit_text, restart_delay
from ocppgw.workers.sockets import reuseport_group

STATUS_INTERVAL = 1.0  # how often each worker's status (link, listeners, connections) is asked for
CALL_TIMEOUT = 5.0  # the longest a worker takes to answer a control call
STOP_MARGIN = 5.0  # beyond shutdown_timeout, before workers still running are killed


class MasterListener:
    """A listener as the API shows it on a node with workers: running while bound here and listening
    in a worker; its connections are every worker's (as last reported)."""

    def __init__(self, master: MasterService, listener: ListenerSection) -> None:
        self.master = master
        self.listener = listener

    def _reports(self) -> list[dict[str, Any]]:
        label = self.listener.label
        return [
            w.status["listeners"][label]
            for w in self.master.workers
            if label in w.status.get("listeners", {})
        ]

    @property
    def port(self) -> Any:
        bound = self.listener.label in self.master.sockets
        return True if bound and any(r.get("running") for r in self._reports()) else None

    @property
    def connections(self) -> int:
        return sum(int(r.get("connections", 0)) for r in self._reports())


class MasterService(TwistdLogging, MultiService):
    """Holds the listening sockets and the API; runs ``config.gateway.workers`` workers."""

    _log = Logger()

    def __init__(self, config: GatewayConfig, reactor: Any, sighup: bool = False) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.sighup = sighup
        self.enabled = config.gateway.enable
        self.fixed_listeners: str | None = (
            "listeners cannot be added, changed or removed at run time with [gateway] workers > 1: "
            "change gw.ini and restart the gateway"
        )
        self.sockets: dict[str, list[socket.socket]] = {}
        self.workers: list[WorkerProcess] = []
        self.stopping = False
        self._sighup = Sighup(reactor, lambda: self.reload_certificates())
        self._status = LoopingCall(self._poll_status)
        self._status.clock = reactor
        # a member of the cluster of its own (client id <client_id>-0) that holds no charge point: the
        # API's client list, kick and node_status ask the workers (and other nodes) through it
        self.metrics = Metrics()
        member_config = replace(config, mqtt=replace(config.mqtt, client_id=master_client_id(config)))
        self.link = broker_link(member_config, reactor, self.metrics)
        self.router = Router(member_config, self.link, reactor, self.metrics)
        self.directory = Directory(self, own_listeners=list)
        self.link_service = LinkService(self.link, config.gateway.shutdown_timeout)
        self.link_service.setServiceParent(self)
        self.api: ApiService | None = None
        if config.api.enable:
            context = ApiContext(
                service=self, router=None, directory=self.directory, clock=reactor,
                data_dir=config.gateway.data_dir,
            )  # fmt: skip
            self.api = ApiService(context, config, reactor)
            self.api.setServiceParent(self)

    # -- start and stop ----------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind every listener's sockets and the API now; a port in use is one line that stops start-up."""
        if self.sockets:
            return
        count = self.config.gateway.workers
        problems: list[str] = []
        for listener in self.config.listeners:
            group = reuseport_group(listener, count, self.config.source)
            if isinstance(group, str):
                problems.append(group)
            else:
                self.sockets[listener.label] = group
        if self.api is not None:
            problem = self.api.bind()
            if problem is not None:
                problems.append(problem)
        if problems:
            self._close_sockets()
            if self.api is not None:
                self.api.stopService()
            for line in problems:
                self._log.critical("{problem}", problem=line)
            raise StartupError(self.config.source, problems)
        super().privilegedStartService()

    def startService(self) -> None:
        self.privilegedStartService()
        super().startService()
        node = self.config.gateway.node_name
        for index in range(1, self.config.gateway.workers + 1):
            mine = {label: group[index - 1] for label, group in self.sockets.items()}
            worker = WorkerProcess(
                index, member_name(node, index), self.config.source, mine, self.reactor, self._exited,
                on_ready=self._ask_status,
            )  # fmt: skip
            self.workers.append(worker)
            worker.spawn()
        for label, group in self.sockets.items():
            host, port = group[0].getsockname()[:2]
            self._log.info(
                "listener {name} on {host}:{port}, served by {count} workers",
                name=label,
                host=host,
                port=port,
                count=len(group),
            )
        self._status.start(STATUS_INTERVAL, now=False)
        if self.sighup:
            self._sighup.install()

    def _exited(self, worker: WorkerProcess, reason: Failure) -> None:
        how = exit_text(reason)
        if self.stopping:
            self._log.info("worker {worker} exited ({how})", worker=worker.member, how=how)
            return
        delay = restart_delay(worker.failures)
        self._log.error(
            "worker {worker} exited ({how}); restarting it in {delay}s",
            worker=worker.member,
            how=how,
            delay=delay,
        )
        worker.restart_call = self.reactor.callLater(delay, self._restart, worker)

    def _restart(self, worker: WorkerProcess) -> None:
        if not self.stopping:
            worker.spawn()

    @inlineCallbacks
    def stopService(self) -> Deferred[None]:
        """Drain every worker (each closes its charge points with 1001 and waits for the broker's
        acknowledgements, as one gateway does), kill those still running after ``shutdown_timeout``
        and a margin, then close the sockets."""
        Service.stopService(self)
        self.stopping = True
        self._sighup.restore()
        if self._status.running:
            self._status.stop()
        for worker in self.workers:
            worker.cancel_restart()
        if self.api is not None:
            yield self.api.stopService()
        for worker in self.workers:
            if worker.ready:
                worker.call("stop", CALL_TIMEOUT).addErrback(lambda _f, w=worker: w.signal("TERM"))
            else:
                worker.signal("TERM")
        ended = DeferredList([worker.ended() for worker in self.workers])
        deadline = self.reactor.callLater(self.config.gateway.shutdown_timeout + STOP_MARGIN, self._kill)
        yield ended
        if deadline.active():
            deadline.cancel()
        self._close_sockets()
        self.router.shutdown()
        yield self.link_service.stopService()

    def _kill(self) -> None:
        for worker in self.workers:
            if worker.running:
                self._log.error("worker {worker} did not stop in time: killed", worker=worker.member)
                worker.signal("KILL")

    def _close_sockets(self) -> None:
        for group in self.sockets.values():
            for sock in group:
                sock.close()
        self.sockets = {}

    def _poll_status(self) -> None:
        for worker in self.workers:
            if worker.ready:
                self._ask_status(worker)

    def _ask_status(self, worker: WorkerProcess) -> None:
        """Refresh ``worker.status`` (``/status``, ``/gateways``): every second, and as soon as it
        serves, so a health check sees a started node at once."""
        worker.call("status", CALL_TIMEOUT).addCallbacks(
            lambda status: setattr(worker, "status", status), lambda _f: None
        )

    # -- fan-out to every worker ---------------------------------------------------------------

    def _each(self, op: str, **args: Any) -> Deferred[list[Any]]:
        """``op`` on every running worker; fires with their results (a failed one logged, left out)."""
        calls = []
        for worker in self.workers:
            if not worker.ready:
                continue

            def failed(failure: Failure, member: str = worker.member) -> None:
                self._log.warn(
                    "worker {worker} did not answer {op}: {error}",
                    worker=member,
                    op=op,
                    error=failure.getErrorMessage(),
                )

            calls.append(worker.call(op, CALL_TIMEOUT, **args).addErrback(failed))
        return gatherResults(calls).addCallback(lambda results: [r for r in results if r is not None])

    def reload_certificates(self) -> Deferred[list[Any]]:
        """Every worker re-reads its certificates (each logs what it loaded or why it could not)."""
        return self._each("reload_certificates")

    # -- ManagedGateway (ocppgw.api.context): what the API routes use -------------------------------

    @property
    def listeners(self) -> list[MasterListener]:
        return [MasterListener(self, listener) for listener in self.config.listeners]

    def listener(self, label: str) -> MasterListener | None:
        return next((x for x in self.listeners if x.listener.label == label), None)

    def metrics_text(self) -> Deferred[bytes]:
        """Every worker's metrics, summed (``ocppgw.workers.exposition``)."""
        return self._each("metrics").addCallback(merge)

    def reconfigure(self, config: GatewayConfig) -> None:
        """Workers read gw.ini and the saved overrides again, for the charge points that connect next."""
        self.config = config
        self._each("reload_config")

    def swap_authenticator(self, config: GatewayConfig) -> Deferred[None]:
        self.config = config
        return self._each("reload_config", authentication=True).addCallback(lambda _: None)

    @inlineCallbacks
    def set_enabled(self, enabled: bool) -> Deferred[list[str]]:
        """Every worker stops or starts listening; the problem lines any of them report."""
        self.enabled = enabled
        results = yield self._each("set_enabled", enabled=enabled)
        return sorted({line for problems in results for line in problems})

    def add_listener(self, listener: ListenerSection) -> str | None:
        return self.fixed_listeners

    def remove_listener(self, label: str, reason: str = "listener removed") -> Deferred[None]:
        return fail(RuntimeError(self.fixed_listeners))
