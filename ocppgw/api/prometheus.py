"""``GET /api/v5/prometheus/stats`` and ``GET /metrics``: the gateway's registry in Prometheus text."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ocppgw.api.context import ApiContext
from ocppgw.api.http import ApiRequest, ApiResponse, Handler, Route

_RESPONSES = {200: "Prometheus text exposition format"}


def _handler(context: ApiContext) -> Handler:
    def stats(request: ApiRequest) -> ApiResponse:
        body = generate_latest(context.metrics.registry)
        return ApiResponse(200, body, {"Content-Type": CONTENT_TYPE_LATEST})

    return stats


def routes(context: ApiContext) -> list[Route]:
    return [Route("GET", "/prometheus/stats", _handler(context), "Metrics (Prometheus text)", _RESPONSES)]


def root_routes(context: ApiContext) -> list[Route]:
    """``/metrics``, outside ``/api/v5``, for a scrape config's default path."""
    return [Route("GET", "/metrics", _handler(context), "Metrics (Prometheus text)", _RESPONSES)]
