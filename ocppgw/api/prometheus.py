"""``GET /api/v5/prometheus/stats`` and ``GET /metrics``: the gateway's registry in Prometheus text
(with ``[gateway] workers``, the sum over the workers: ``ocppgw.workers.exposition``)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet.defer import maybeDeferred

from ocppgw.api.context import ApiContext
from ocppgw.api.http import ApiRequest, ApiResponse, Handler, Route

_RESPONSES = {200: "Prometheus text exposition format"}


def _handler(context: ApiContext) -> Handler:
    def stats(request: ApiRequest) -> Any:
        # the workers' master asks each worker: a Deferred
        text = maybeDeferred(context.service.metrics_text)
        return text.addCallback(lambda body: ApiResponse(200, body, {"Content-Type": CONTENT_TYPE_LATEST}))

    return stats


def routes(context: ApiContext) -> list[Route]:
    return [Route("GET", "/prometheus/stats", _handler(context), "Metrics (Prometheus text)", _RESPONSES)]


def root_routes(context: ApiContext) -> list[Route]:
    """``/metrics``, outside ``/api/v5``, for a scrape config's default path."""
    return [Route("GET", "/metrics", _handler(context), "Metrics (Prometheus text)", _RESPONSES)]
