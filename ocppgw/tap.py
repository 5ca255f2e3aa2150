"""twistd entry point: ``twistd ocppgw --config gw.ini``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from twisted.python import usage

from ocppgw.config import ConfigError, load_config, problem_line
from ocppgw.core.schemas import SchemaLoadError, SchemaRegistry, shipped_schema_dir
from ocppgw.listen_queue import check_listen_queues
from ocppgw.logtext import twistd_observer
from ocppgw.openfiles import open_files
from ocppgw.service import GatewayService, StartupError
from ocppgw.tls.broker import check_mqtt_tls
from ocppgw.tls.listener import listener_options


class Options(usage.Options):
    optParameters = [("config", "c", None, "path to gw.ini")]

    def postOptions(self) -> None:
        """Read and check the config once; a bad file stops here with one line per problem."""
        if not self["config"]:
            raise usage.UsageError("--config is required")
        try:
            self.gateway_config = load_config(self["config"])
        except ConfigError as e:
            _fail(e.problems)
        try:
            self.tls_options = listener_options(self.gateway_config)
        except ConfigError as e:
            _fail(e.problems)
        try:
            check_mqtt_tls(self.gateway_config)
        except ConfigError as e:
            _fail(e.problems)
        gateway = self.gateway_config.gateway
        self.schemas = None
        if gateway.message_format_checking != "disable":
            directory = gateway.json_schema_dir or shipped_schema_dir()
            source = self.gateway_config.source
            try:
                self.schemas = SchemaRegistry.load(directory, gateway.json_schema_id_prefix)
            except SchemaLoadError as e:
                _fail([problem_line(source, "gateway", "json_schema_dir", str(e))])
            if not len(self.schemas):
                _fail([problem_line(source, "gateway", "json_schema_dir", f"no schema files in {directory}")])


def startup_errors_without_traceback(previous: Callable[..., Any]) -> Callable[..., Any]:
    """An excepthook that lets a ``StartupError`` end twistd quietly and leaves the rest to ``previous``.

    twistd re-raises what ``privilegedStartService`` raised once it has told a waiting parent and
    removed its pidfile; the service has already logged each problem line, so a traceback under
    them would only bury them.
    """

    def hook(kind: type[BaseException], value: BaseException, traceback: Any) -> None:
        if not issubclass(kind, StartupError):
            previous(kind, value, traceback)

    return hook


def _fail(lines: list[str]) -> None:
    sys.stderr.write("".join(line + "\n" for line in lines))
    raise SystemExit(1)


def makeService(options: Options, reactor: Any = None) -> Any:
    """Wire the gateway from parsed options: a ``GatewayService``, or with ``[gateway] workers`` > 1
    the master of that many (``ocppgw.workers.master``)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    sys.excepthook = startup_errors_without_traceback(sys.excepthook)
    config = options.gateway_config
    open_files(config, config.gateway.workers)
    check_listen_queues(config)
    if config.gateway.workers > 1:
        from ocppgw.workers.master import MasterService

        service: GatewayService | MasterService = MasterService(config, reactor, sighup=True)
    else:
        service = GatewayService(
            options.gateway_config,
            reactor,
            schemas=options.schemas,
            tls_options=options.tls_options,
            sighup=True,
            gc_policy=True,
        )
    # twistd's own options (--logfile, -n, ...): where its log observer would write, ours writes
    service.log_observer = twistd_observer(getattr(options, "parent", None))
    return service
