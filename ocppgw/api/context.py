"""What the API's route modules are built from: the running gateway and the pieces they read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocppgw.config import GatewayConfig
from ocppgw.core.router import Router
from ocppgw.metrics import Metrics

if TYPE_CHECKING:
    from ocppgw.service import GatewayService


@dataclass(frozen=True)
class ApiContext:
    """Handed to every ``routes(context)``; ``clock`` is the reactor (a ``Clock`` in tests)."""

    service: GatewayService
    config: GatewayConfig
    router: Router
    metrics: Metrics
    clock: Any
    data_dir: Path

    @classmethod
    def of(cls, service: GatewayService) -> ApiContext:
        """The context of a running ``GatewayService``."""
        return cls(
            service=service,
            config=service.config,
            router=service.router,
            metrics=service.metrics,
            clock=service.reactor,
            data_dir=service.config.gateway.data_dir,
        )
