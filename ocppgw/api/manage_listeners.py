"""``/gateways/ocpp/listeners``: listener objects in the reference's shape (contract B.2), mapped
onto the ``[listeners.<type>.<name>]`` keys of gw.ini.

A change is saved to overrides.json as that section's INI text (every mapped key given, absent ones
as null, so the section is replaced) and applied to that listener only: a new one starts listening,
a changed one is stopped and started again with its new bind and TLS files (its charge points closed
with 1001), a deleted one stops and its charge points are closed with 1001.

Keys the reference has and a Twisted listener has no use for (``acceptors``, ``tcp_options.active_n``,
``websocket.piggyback``, ...) are accepted and dropped; ``enable``, ``enable_authn`` and
``access_rules`` are accepted only with the value that means what we do.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from twisted.internet.defer import inlineCallbacks

from ocppgw.api.http import ApiError, ApiRequest, ApiResponse, Route, bad_request
from ocppgw.api.manage_common import SECRET, ManageContext, change_config, duration, ini_text, keep_secret
from ocppgw.api.manage_common import object_body as checked_object
from ocppgw.api.overrides import read_overrides, write_overrides
from ocppgw.config import ListenerSection

_ID = re.compile(r"ocpp:(?P<type>wss?):(?P<name>[A-Za-z0-9_-]+)")
_TOP = {"bind": "bind", "mountpoint": "mountpoint", "max_connections": "max_connections"}
_TOP |= {"max_conn_rate": "max_conn_rate", "proxy_protocol": "proxy_protocol"}
_TOP |= {"proxy_protocol_timeout": "proxy_protocol_timeout"}
_TCP = ("backlog", "send_timeout", "send_timeout_close", "nodelay", "reuseaddr", "recbuf", "sndbuf")
_WEBSOCKET = ("path", "compress", "fail_if_no_subprotocol", "supported_subprotocols")
_WEBSOCKET += ("proxy_address_header", "trusted_proxies")
_SSL = ("certfile", "keyfile", "password", "cacertfile", "verify", "fail_if_no_peer_cert", "depth")
_SSL += ("versions", "ciphers", "handshake_timeout", "client_cert_identity")
# accepted for compatibility, no meaning here
_DROPPED_TOP = frozenset({"id", "type", "name", "running", "status", "node_status", "acceptors"})
_DROPPED_TCP = frozenset({"active_n", "buffer", "high_watermark", "keepalive", "nolinger"})
_DROPPED_WS = frozenset({"piggyback", "idle_timeout", "max_frame_size", "check_origin_enable"})
_DROPPED_WS |= {"allow_origin_absence", "check_origins", "proxy_port_header", "deflate_opts"}
_DROPPED_SSL = frozenset({"reuse_sessions", "secure_renegotiate", "hibernate_after", "enable"})
_DROPPED_SSL |= {"honor_cipher_order", "log_level", "user_lookup_fun", "partial_chain", "ocsp"}
_FIXED = {"enable": True, "enable_authn": True, "access_rules": []}
_IGNORED_INI = ("acceptors", "active_n", "buffer", "high_watermark")


def listener_id(listener: ListenerSection) -> str:
    return f"ocpp:{listener.kind}:{listener.name}"


def _bind(listener: ListenerSection) -> str:
    try:
        v6 = ipaddress.ip_address(listener.host).version == 6
    except ValueError:
        v6 = False
    return f"[{listener.host}]:{listener.port}" if v6 else f"{listener.host}:{listener.port}"


def _infinity(value: float | None) -> Any:
    if value is None:
        return "infinity"
    return int(value) if value == int(value) else value


def render(listener: ListenerSection) -> dict[str, Any]:
    """The listener object with every default filled in, secrets as ``******``."""
    result: dict[str, Any] = {
        "id": listener_id(listener),
        "type": listener.kind,
        "name": listener.name,
        "bind": _bind(listener),
        "acceptors": 16,
        "max_connections": _infinity(listener.max_connections),
        "max_conn_rate": _infinity(listener.max_conn_rate),
        "proxy_protocol": listener.proxy_protocol,
        "proxy_protocol_timeout": duration(listener.proxy_protocol_timeout),
        "mountpoint": listener.mountpoint,
        **_FIXED,
        "tcp_options": {
            "backlog": listener.backlog,
            "send_timeout": duration(listener.send_timeout),
            "send_timeout_close": listener.send_timeout_close,
            "nodelay": listener.nodelay,
            "reuseaddr": listener.reuseaddr,
            "recbuf": listener.recbuf,
            "sndbuf": listener.sndbuf,
        },
        "websocket": {
            "path": listener.path,
            "compress": listener.compress,
            "fail_if_no_subprotocol": listener.fail_if_no_subprotocol,
            "supported_subprotocols": ", ".join(listener.supported_subprotocols),
            "proxy_address_header": listener.proxy_address_header,
            "trusted_proxies": ", ".join(str(n) for n in listener.trusted_proxies),
        },
    }
    tls = listener.tls
    if tls is not None:
        result["ssl_options"] = {
            "certfile": str(tls.certfile),
            "keyfile": str(tls.keyfile),
            "password": SECRET if tls.password is not None else None,
            "cacertfile": str(tls.cacertfile) if tls.cacertfile is not None else None,
            "verify": tls.verify,
            "fail_if_no_peer_cert": tls.fail_if_no_peer_cert,
            "depth": tls.depth,
            "versions": list(tls.versions),
            "ciphers": tls.ciphers,
            "handshake_timeout": duration(tls.handshake_timeout),
            "client_cert_identity": tls.client_cert_identity,
        }
    return result


def _sub(body: dict[str, Any], key: str, mapped: tuple[str, ...], dropped: frozenset[str]) -> dict[str, Any]:
    value = body.get(key) or {}
    return {k: v for k, v in checked_object(value, frozenset(mapped) | dropped, key).items() if k in mapped}


def ini_section(body: Any, kind: str, stored: ListenerSection | None) -> dict[str, str | None]:
    """The ``[listeners.<kind>.<name>]`` texts of a listener object; absent keys as null (defaults)."""
    allowed = frozenset(_TOP) | _DROPPED_TOP | set(_FIXED) | {"tcp_options", "websocket", "ssl_options"}
    body = checked_object(body, allowed, "listener")
    for key, value in _FIXED.items():
        if key in body and body[key] != value:
            raise bad_request(f"{key}: only {value!r} is supported")
    given: dict[str, Any] = {ini: body.get(key) for key, ini in _TOP.items()}
    given |= _sub(body, "tcp_options", _TCP, _DROPPED_TCP)
    given |= _sub(body, "websocket", _WEBSOCKET, _DROPPED_WS)
    if kind == "wss":
        ssl = _sub(body, "ssl_options", _SSL, _DROPPED_SSL)
        stored_password = stored.tls.password if stored is not None and stored.tls is not None else None
        ssl["password"] = keep_secret(ssl.get("password"), stored_password)
        given |= ssl
    elif body.get("ssl_options"):
        raise bad_request("ssl_options: only a wss listener has them")
    keys = ("path", *_TOP.values(), *_TCP, *_WEBSOCKET, *_IGNORED_INI) + (_SSL if kind == "wss" else ())
    section = {key: ini_text("listener", key, given.get(key)) for key in keys}
    return {k: (None if v == "" else v) for k, v in section.items()}


class ListenerEndpoints:
    """The handlers, over ``context.service`` (``ocppgw.service.GatewayService``)."""

    def __init__(self, context: ManageContext) -> None:
        self.context = context

    def changeable(self) -> None:
        """400 ``NOT_SUPPORTED`` where listeners cannot change at run time (``[gateway] workers`` > 1)."""
        reason = self.context.service.fixed_listeners
        if reason is not None:
            raise ApiError(400, "NOT_SUPPORTED", reason)

    def find(self, listener_id_text: str, status: int = 404) -> ListenerSection:
        match = _ID.fullmatch(listener_id_text)
        if match is None:
            raise ApiError(404, "RESOURCE_NOT_FOUND", f"Listener not found: {listener_id_text[:80]}")
        service = self.context.service.listener(f"{match['type']}.{match['name']}")
        if service is None:
            code = "RESOURCE_NOT_FOUND" if status == 404 else "BAD_REQUEST"
            raise ApiError(status, code, f"Listener {listener_id_text} not found")
        return service.listener  # type: ignore[no-any-return]

    def with_status(self, listener: ListenerSection) -> dict[str, Any]:
        service = self.context.service.listener(listener.label)
        running = service is not None and service.port is not None
        current = service.connections if service is not None else 0
        status = {"running": running, "max_connections": _infinity(listener.max_connections)}
        status["current_connections"] = current
        node = self.context.service.config.gateway.node_name
        return {**render(listener), "running": running, "status": status,
                "node_status": [{"node": node, "status": status}]}  # fmt: skip

    def list(self, request: ApiRequest) -> ApiResponse:
        listeners = [s.listener for s in self.context.service.listeners]
        return ApiResponse(200, [self.with_status(x) for x in listeners])

    def get(self, request: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.with_status(self.find(request.path_params["id"])))

    @inlineCallbacks
    def create(self, request: ApiRequest) -> Any:
        self.changeable()
        body = request.body
        for key in ("type", "name", "bind"):
            if not isinstance(body, dict) or body.get(key) in (None, ""):
                raise bad_request(f"{key} is required")
        kind, name = body["type"], body["name"]
        if (
            kind not in ("ws", "wss")
            or not isinstance(name, str)
            or not re.fullmatch(r"[A-Za-z0-9_-]+", name)
        ):
            raise bad_request("type must be ws or wss and name letters, digits, _ or -")
        if self.context.service.listener(f"{kind}.{name}") is not None:
            raise bad_request(f"listener_name_occupied: ocpp:{kind}:{name}")
        listener = yield self.apply(kind, name, ini_section(body, kind, None), None)
        return ApiResponse(201, render(listener))

    @inlineCallbacks
    def update(self, request: ApiRequest) -> Any:
        self.changeable()
        stored = self.find(request.path_params["id"], status=400)
        section = ini_section(request.body, stored.kind, stored)
        listener = yield self.apply(stored.kind, stored.name, section, stored)
        return ApiResponse(200, render(listener))

    @inlineCallbacks
    def delete(self, request: ApiRequest) -> Any:
        self.changeable()
        stored = self.find(request.path_params["id"])
        change_config(self.context, {stored.section: None})
        yield self.context.service.remove_listener(stored.label)
        return ApiResponse(204)

    @inlineCallbacks
    def apply(self, kind: str, name: str, section: dict[str, str | None], old: ListenerSection | None) -> Any:
        """Check and save the section, then (re)start that listener alone; 400 when it cannot listen,
        and then the previous listener and the previous overrides are back."""
        service = self.context.service
        previous = service.config
        before = read_overrides(previous.gateway.data_dir)
        label = f"{kind}.{name}"
        config = change_config(self.context, {f"listeners.{label}": section})
        listener = next(x for x in config.listeners if x.label == label)
        if old is not None:
            yield service.remove_listener(label, "listener changed")
        problem = service.add_listener(listener)
        if problem is not None:
            write_overrides(previous.gateway.data_dir, before)
            service.config = previous
            if old is not None:
                service.add_listener(old)
            reason = problem.partition(f"[{listener.section}] ")[2] or problem
            raise bad_request(f"Invalid bind address: {reason}" if reason.startswith("bind") else reason)
        return listener


def routes(context: ManageContext) -> list[Route]:
    e = ListenerEndpoints(context)
    base = "/gateways/ocpp/listeners"
    return [
        Route("GET", base, e.list, "The gateway's listeners", {200: "listeners"}),
        Route("POST", base, e.create, "Add a listener", {201: "created", 400: "invalid; workers > 1"}),
        Route("GET", base + "/{id}", e.get, "One listener", {200: "listener", 404: "not found"}),
        Route("PUT", base + "/{id}", e.update, "Change a listener", {200: "listener", 400: "invalid"}),
        Route(
            "DELETE",
            base + "/{id}",
            e.delete,
            "Delete a listener",
            {204: "deleted", 400: "refused (the last listener; workers > 1)", 404: "not found"},
        ),
    ]
