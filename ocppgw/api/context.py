"""What the API's route modules are built from: the gateway they manage and the pieces they read.

The gateway is a ``GatewayService`` in a single process, or the master of ``[gateway] workers``
(``ocppgw.workers.master.MasterService``), which manages its workers and holds no charge points.
``ManagedGateway`` is what the routes use of either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from ocppgw.config import GatewayConfig, ListenerSection

if TYPE_CHECKING:
    from ocppgw.api.directory import Directory
    from ocppgw.core.router import Router
    from ocppgw.service import GatewayService


class ManagedListener(Protocol):
    """One listener as ``/gateways`` and ``/gateways/ocpp/listeners`` show it."""

    listener: ListenerSection
    port: Any  # not None while it listens

    @property
    def connections(self) -> int:
        """Live connections it accepted (every worker's)."""


class ManagedGateway(Protocol):
    """What the routes use of the gateway (``GatewayService`` or the workers' master)."""

    config: GatewayConfig  # replaced by manage_common.change_config
    enabled: bool
    fixed_listeners: str | None  # why listeners cannot change at run time; None: they can

    @property
    def listeners(self) -> Sequence[ManagedListener]:
        """Every configured listener, in order."""

    def listener(self, label: str) -> ManagedListener | None: ...

    def metrics_text(self) -> bytes | Deferred[bytes]: ...

    def reconfigure(self, config: GatewayConfig) -> None: ...

    def set_enabled(self, enabled: bool) -> Deferred[list[str]]: ...

    def swap_authenticator(self, config: GatewayConfig) -> Deferred[None]: ...

    def add_listener(self, listener: ListenerSection) -> str | None: ...

    def remove_listener(self, label: str, reason: str = ...) -> Deferred[None]: ...


@dataclass(frozen=True)
class ApiContext:
    """Handed to every ``routes(context)``; ``clock`` is the reactor (a ``Clock`` in tests);
    ``router`` is None where this process holds no charge points (the workers' master);
    ``directory`` reaches the charge points of every member (``ocppgw.api.directory``)."""

    service: ManagedGateway
    router: Router | None
    directory: Directory
    clock: Any
    data_dir: Path

    @property
    def config(self) -> GatewayConfig:
        """The gateway's config now: the management API may have changed it since start-up."""
        return self.service.config

    @classmethod
    def of(cls, service: GatewayService) -> ApiContext:
        """The context of a running ``GatewayService``."""
        return cls(
            service=service,
            router=service.router,
            directory=service.directory,
            clock=service.reactor,
            data_dir=service.config.gateway.data_dir,
        )
