"""``/gateways`` and ``/gateways/ocpp``: our one gateway in the reference's shapes (contract B.1).

``PUT /gateways/ocpp`` takes the gateway-level keys (``listeners`` and ``authentication`` in the body
are ignored, as the reference does; a sub-object such as ``upstream`` replaces the whole of it),
checks them as gw.ini keys, saves them to overrides.json and hands them to the router for the charge
points that connect next. Which changed keys only a restart applies is logged and said in the
``X-Restart-Required`` header (the reference answers 204 without a body).

``enable/{true|false}`` is saved as ``[gateway] enable`` in overrides.json: a disabled gateway starts
disabled.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from ocppgw.api.http import ApiError, ApiRequest, ApiResponse, Route, bad_request
from ocppgw.api.manage_authn import render as render_authenticator
from ocppgw.api.manage_common import ManageContext, change_config, duration, ini_text, object_body, rfc3339
from ocppgw.api.manage_listeners import ListenerEndpoints
from ocppgw.config import GatewayConfig

_GATEWAY_KEYS = ("mountpoint", "default_heartbeat_interval", "heartbeat_checking_times_backoff")
_GATEWAY_KEYS += ("message_format_checking", "json_schema_dir", "json_schema_id_prefix", "idle_timeout")
_UPSTREAM_KEYS = ("topic", "reply_topic", "error_topic", "qos")
_DNSTREAM_KEYS = ("topic", "max_mqueue_len", "reply_timeout", "qos")
_IGNORED = frozenset({"name", "status", "created_at", "started_at", "stopped_at", "listeners"})
_IGNORED |= {"authentication", "enable_stats", "enable"}
_ALLOWED = frozenset(_GATEWAY_KEYS) | {"upstream", "dnstream"} | _IGNORED
# what the router takes for the next charge point (Router.reconfigure); the rest waits for a restart
_AT_RUNTIME = frozenset({"mountpoint", "default_heartbeat_interval", "heartbeat_checking_times_backoff"})
_AT_RUNTIME |= {"upstream", "dnstream"}
_STATUS = ("running", "stopped", "unloaded")

_log = Logger()


def _value(value: Any) -> Any:
    return value if not isinstance(value, float) else duration(value)


class GatewayEndpoints:
    def __init__(self, context: ManageContext) -> None:
        self.context = context
        self.listeners = ListenerEndpoints(context)
        self.created_at = self.started_at = context.clock.seconds()
        self.stopped_at: float | None = None

    @property
    def config(self) -> GatewayConfig:
        return self.context.service.config  # type: ignore[no-any-return]

    def status(self) -> str:
        return "running" if self.context.service.enabled else "stopped"

    def times(self) -> dict[str, Any]:
        times = {"created_at": rfc3339(self.created_at), "started_at": rfc3339(self.started_at)}
        if self.stopped_at is not None and not self.context.service.enabled:
            times["stopped_at"] = rfc3339(self.stopped_at)
        return times

    @inlineCallbacks
    def list(self, request: ApiRequest) -> Any:
        wanted = request.arg("status")
        if wanted is not None and wanted not in _STATUS:
            raise bad_request(f"Unknown gateway status in query: {wanted[:40]}")
        listeners = [self.listeners.with_status(s.listener) for s in self.context.service.listeners]
        # every node of the cluster (this one first); the totals are cluster-summed, as the reference's
        node_status = yield self.context.directory.node_status()
        maxima = [x["max_connections"] for x in node_status]
        gateway = {
            "name": "ocpp",
            "status": self.status(),
            **self.times(),
            "max_connections": "infinity" if "infinity" in maxima else sum(maxima),
            "current_connections": sum(x["current_connections"] for x in node_status),
            "listeners": [
                {"id": x["id"], "type": x["type"], "name": x["name"], "running": x["running"]}
                for x in listeners
            ],
            "node_status": node_status,
        }
        return ApiResponse(200, [gateway] if wanted in (None, gateway["status"]) else [])

    def get(self, request: ApiRequest) -> ApiResponse:
        config = self.config
        gateway = config.gateway
        body: dict[str, Any] = {
            "name": "ocpp",
            "status": self.status(),
            **self.times(),
            "enable": self.context.service.enabled,
            "enable_stats": True,
            **{key: _value(getattr(gateway, key)) for key in _GATEWAY_KEYS},
            "upstream": {
                **{key: getattr(config.upstream, key) for key in _UPSTREAM_KEYS},
                "topic_override_mapping": dict(config.upstream.topic_override_mapping),
            },
            "dnstream": {key: _value(getattr(config.dnstream, key)) for key in _DNSTREAM_KEYS},
            "listeners": [self.listeners.with_status(s.listener) for s in self.context.service.listeners],
        }
        if body["json_schema_dir"] is not None:
            body["json_schema_dir"] = str(body["json_schema_dir"])
        if config.authentication is not None:
            body["authentication"] = render_authenticator(config.authentication)
        for item in body["listeners"]:
            item.pop("status"), item.pop("node_status")
        return ApiResponse(200, body)

    def put(self, request: ApiRequest) -> ApiResponse:
        body = object_body(request.body, _ALLOWED, "gateway")
        changes: dict[str, Any] = {}
        gateway = {key: ini_text("gateway", key, body[key]) for key in _GATEWAY_KEYS if key in body}
        if gateway:
            changes["gateway"] = gateway
        for name, keys in (("upstream", _UPSTREAM_KEYS), ("dnstream", _DNSTREAM_KEYS)):
            if name in body:
                allowed = frozenset(keys) | ({"topic_override_mapping"} if name == "upstream" else set())
                given = object_body(body[name], allowed, name)
                changes[name] = {key: ini_text(name, key, given.get(key)) for key in keys}
        if "upstream" in body:
            mapping = body["upstream"].get("topic_override_mapping") or {}
            if not isinstance(mapping, dict):
                raise bad_request("upstream.topic_override_mapping: expected an object")
            current = self.config.upstream.topic_override_mapping
            section = dict.fromkeys(current, None) | {
                k: ini_text("mapping", k, v) for k, v in mapping.items()
            }
            changes["upstream.topic_override_mapping"] = section
        before = self.config
        config = change_config(self.context, changes)
        self.context.service.reconfigure(config)
        restart = sorted(key for key in _changed(before, config) if key not in _AT_RUNTIME)
        if restart:
            _log.warn("gateway settings {keys} changed: they apply after a restart", keys=", ".join(restart))
        return ApiResponse(204, headers={"X-Restart-Required": ", ".join(restart)} if restart else {})

    @inlineCallbacks
    def enable(self, request: ApiRequest) -> Any:
        flag = request.path_params["enable"]
        if flag not in ("true", "false"):
            raise bad_request(f"enable: expected true or false, got {flag[:20]!r}")
        service = self.context.service
        was = service.enabled
        problems = yield service.set_enabled(flag == "true")
        if was != service.enabled:
            now = self.context.clock.seconds()
            if service.enabled:
                self.started_at = now
            else:
                self.stopped_at = now
        if problems:
            raise ApiError(400, "BAD_REQUEST", "; ".join(problems))
        change_config(self.context, {"gateway": {"enable": flag}})
        return ApiResponse(204)


def _changed(before: GatewayConfig, after: GatewayConfig) -> list[str]:
    """The gateway-level keys (and ``upstream``, ``dnstream``) whose values differ."""
    keys = [key for key in _GATEWAY_KEYS if getattr(before.gateway, key) != getattr(after.gateway, key)]
    keys += [name for name in ("upstream", "dnstream") if getattr(before, name) != getattr(after, name)]
    return keys


def routes(context: ManageContext) -> list[Route]:
    e = GatewayEndpoints(context)
    return [
        Route("GET", "/gateways", e.list, "Every gateway (ours: ocpp)", {200: "gateways", 400: "bad status"}),
        Route("GET", "/gateways/ocpp", e.get, "The gateway's configuration", {200: "configuration"}),
        Route(
            "PUT",
            "/gateways/ocpp",
            e.put,
            "Change the gateway's configuration",
            {204: "changed", 400: "invalid"},
        ),
        Route(
            "PUT", "/gateways/ocpp/enable/{enable}", e.enable, "Enable or disable", {204: "done", 400: "bad"}
        ),
    ]
