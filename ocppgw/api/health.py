"""``GET /status`` (and ``/api/v5/status``): whether this node can take charge points, for a load
balancer's health check or a Kubernetes probe; no authentication, as the reference's.

200 when the gateway is enabled, every listener listens and the broker link is connected; 503
otherwise, with the reasons. The body is the reference's two lines of text
(``Node <node> is started`` / ``ocppgw is running``, or ``is not_running: <reasons>``);
``?format=json`` answers ``{"node_name", "status", "app_status", "reasons"}`` instead.
"""

from __future__ import annotations

from typing import Any

from ocppgw.api.context import ApiContext
from ocppgw.api.http import ApiRequest, ApiResponse, Handler, Route

_RESPONSES = {200: "this node takes charge points", 503: "it does not: the reasons"}
_TEXT = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}


def problems(context: ApiContext) -> list[str]:
    """Why this node cannot take charge points now; empty when it can."""
    service = context.service
    reasons = []
    if not service.running:
        reasons.append("gateway not started")
    if not service.enabled:
        reasons.append("gateway disabled")
    elif not service.listeners:
        reasons.append("no listener")
    else:
        down = [s.listener.label for s in service.listeners if s.port is None]
        reasons.extend(f"listener {label} not listening" for label in down)
    if not service.link.connected:
        reasons.append("broker link down")
    return reasons


def _handler(context: ApiContext) -> Handler:
    def status(request: ApiRequest) -> ApiResponse:
        reasons = problems(context)
        node = context.config.gateway.node_name
        code = 503 if reasons else 200
        if request.arg("format") == "json":
            body: Any = {
                "node_name": node,
                "status": "started",
                "app_status": "not_running" if reasons else "running",
                "reasons": reasons,
            }
            return ApiResponse(code, body, {"Cache-Control": "no-store"})
        state = f"not_running: {'; '.join(reasons)}" if reasons else "running"
        return ApiResponse(code, f"Node {node} is started\nocppgw is {state}\n".encode(), _TEXT)

    return status


def routes(context: ApiContext) -> list[Route]:
    return [Route("GET", "/status", _handler(context), "Health check", _RESPONSES, public=True)]


def root_routes(context: ApiContext) -> list[Route]:
    """``/status`` at the root, where load balancers look."""
    return routes(context)
