"""What the API's route modules are built from: the running gateway and the pieces they read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocppgw.config import GatewayConfig
from ocppgw.core.router import Router
from ocppgw.metrics import Metrics

if TYPE_CHECKING:
    from ocppgw.api.directory import Directory
    from ocppgw.service import GatewayService


@dataclass(frozen=True)
class ApiContext:
    """Handed to every ``routes(context)``; ``clock`` is the reactor (a ``Clock`` in tests);
    ``directory`` reaches the charge points of every member (``ocppgw.api.directory``)."""

    service: GatewayService
    router: Router
    directory: Directory
    metrics: Metrics
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
            metrics=service.metrics,
            clock=service.reactor,
            data_dir=service.config.gateway.data_dir,
        )
