"""``/gateways/ocpp/clients``: the connected charge points as the reference's client objects, with
its filters and paging; ``DELETE`` kicks one (close 1000 "kicked").

Every member's charge points are listed (``node`` says where each is; the ``node`` filter picks one
node), through the context's ``Directory``; paging is over the merged list, this member's first.
Only live connections are listed (a charge point that left has no session to show), so
``conn_state`` is always ``connected``. The counters come from Autobahn's per-connection traffic
statistics and the session's queue; nothing is counted per message for this module.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import inlineCallbacks

from ocppgw.api.http import ApiError, ApiRequest, ApiResponse, Route, bad_request, paginate
from ocppgw.config import GatewayConfig
from ocppgw.core.router import Attached
from ocppgw.core.topics import render

if TYPE_CHECKING:
    from ocppgw.api.context import ApiContext

BASE = "/gateways/ocpp/clients"
FILTERS = (
    "node", "clientid", "username", "ip_address", "conn_state", "proto_ver", "clean_start",
    "like_clientid", "like_username", "gte_created_at", "lte_created_at", "gte_connected_at",
    "lte_connected_at",
)  # fmt: skip
QUERY_PARAMETERS = {BASE: (*FILTERS, "page", "limit")}  # for the OpenAPI document
_NOT_FOUND = "Client not found"


def rfc3339(epoch: float) -> str:
    """``2021-12-07T10:44:02.721+08:00``: milliseconds and the local offset, as the reference."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="milliseconds")


def _split_peer(peer: str) -> tuple[str, int | None]:
    host, _, port = peer.rpartition(":")
    host = host.strip("[]")
    return (host, int(port)) if port.isdigit() else (peer, None)


def client_object(config: GatewayConfig, attached: Attached) -> dict[str, Any]:
    """One connected charge point with the keys of the reference's ``format_channel_info``."""
    session = attached.session
    cid = session.cid
    host, port = _split_peer(attached.peer)
    traffic = getattr(attached.connection, "traffic", None)
    recv_oct, recv_cnt, send_oct, send_cnt = traffic() if traffic is not None else (0, 0, 0, 0)
    listener = attached.listener
    mountpoint = listener.mountpoint if listener.mountpoint is not None else config.gateway.mountpoint
    since = rfc3339(attached.since)
    return {
        "node": config.gateway.node_name, "clientid": cid, "username": attached.username,
        "mountpoint": mountpoint, "proto_name": "OCPP", "proto_ver": "1.6", "ip_address": host,
        "port": port, "is_bridge": False, "connected_at": since, "disconnected_at": None,
        "connected": True, "keepalive": int(session.heartbeat_interval),
        "clean_start": True, "expiry_interval": 0, "created_at": since,
        "subscriptions_cnt": 1, "subscriptions_max": 1,
        "inflight_cnt": 0 if session.in_flight is None else 1, "inflight_max": 1,
        "mqueue_len": session.queue_length, "mqueue_max": config.dnstream.max_mqueue_len,
        "mqueue_dropped": session.dropped, "awaiting_rel_cnt": 0, "awaiting_rel_max": 0,
        "recv_oct": recv_oct, "recv_cnt": recv_cnt, "recv_pkt": recv_cnt, "recv_msg": recv_cnt,
        "send_oct": send_oct, "send_cnt": send_cnt, "send_pkt": send_cnt, "send_msg": send_cnt,
        "mailbox_len": 0, "heap_size": 0, "reductions": 0,
    }  # fmt: skip


def _epoch(text: str, name: str) -> float:
    """A time filter: epoch milliseconds or RFC 3339, as seconds."""
    try:
        return int(text) / 1000.0
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise bad_request(f"{name}: expected epoch milliseconds or an RFC 3339 time") from None


def _predicates(context: ApiContext, request: ApiRequest) -> list[Callable[[dict[str, Any]], bool]]:
    """One test per filter given; a bad value, or a node no member is on, is a 400 (the reference's
    500 NODE_DOWN, improved)."""
    tests: list[Callable[[dict[str, Any]], bool]] = []
    state = request.arg("conn_state")
    if state is not None:
        tests.append(lambda c: state == "connected")
    for key in ("node", "clientid", "username", "proto_ver"):
        value = request.arg(key)
        if value is not None:
            tests.append(lambda c, key=key, value=value: c.get(key) == value)
    address = request.arg("ip_address")
    if address is not None:
        try:
            wanted = ipaddress.ip_address(address)
        except ValueError:
            raise bad_request(f"ip_address: not an IP address: {address[:60]}") from None
        tests.append(lambda c: _same_address(c.get("ip_address"), wanted))
    clean = request.arg("clean_start")
    if clean is not None:
        if clean not in ("true", "false"):
            raise bad_request("clean_start: expected true or false")
        tests.append(lambda c: clean == "true")
    for key in ("clientid", "username"):
        part = request.arg(f"like_{key}")
        if part is not None:
            tests.append(lambda c, key=key, part=part: isinstance(c.get(key), str) and part in c[key])
    for bound in ("gte", "lte"):
        for what in ("created_at", "connected_at"):
            text = request.arg(f"{bound}_{what}")
            if text is not None:
                at = _epoch(text, f"{bound}_{what}")
                tests.append(lambda c, at=at, bound=bound: _within(c.get("connected_at"), at, bound))
    return tests


def _within(text: Any, at: float, bound: str) -> bool:
    """Whether the client object's ``connected_at`` (RFC 3339, milliseconds) is on ``bound``'s side
    of ``at``, compared at millisecond precision."""
    try:
        since = datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return False
    at = round(at, 3)
    return since >= at if bound == "gte" else since <= at


def _same_address(text: Any, wanted: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == wanted
    except ValueError:
        return False


def routes(context: ApiContext) -> list[Route]:
    directory = context.directory

    @inlineCallbacks
    def found(request: ApiRequest, message: str = _NOT_FOUND) -> Any:
        client = yield directory.find(request.path_params["clientid"])
        if client is None:
            raise ApiError(404, "RESOURCE_NOT_FOUND", message)
        return client

    @inlineCallbacks
    def list_clients(request: ApiRequest) -> Any:
        tests = _predicates(context, request)
        node = request.arg("node")
        if node is not None and node not in directory.nodes():
            raise bad_request(f"invalid node: {node[:60]}")
        clients = yield directory.clients()
        objects = [client for client in clients if all(test(client) for test in tests)]
        fuzzy = request.arg("like_clientid") is not None or request.arg("like_username") is not None
        return ApiResponse(200, paginate(objects, request, count=not fuzzy))

    @inlineCallbacks
    def get_client(request: ApiRequest) -> Any:
        client = yield found(request)
        return ApiResponse(200, client)

    @inlineCallbacks
    def kick(request: ApiRequest) -> Any:
        kicked = yield directory.kick(request.path_params["clientid"])
        if not kicked:
            raise ApiError(404, "RESOURCE_NOT_FOUND", _NOT_FOUND)
        return ApiResponse(204)

    @inlineCallbacks
    def subscriptions(request: ApiRequest) -> Any:
        client = yield found(request, "client process not found")
        cid = client["clientid"]
        attached = context.router.find(cid)
        if attached is not None:  # here: the topic it subscribed to when it connected
            topic = attached.upstream.topics.dnstream
        else:  # elsewhere: the topic the member's config renders (as this one's, in one cluster)
            mountpoint = client.get("mountpoint")
            topic = render(mountpoint if isinstance(mountpoint, str) else "", cid)
            topic += render(context.config.dnstream.topic, cid)
        qos = context.config.dnstream.qos
        return ApiResponse(200, [{"topic": topic, "qos": qos, "nl": 0, "rap": 0, "rh": 0}])

    one = BASE + "/{clientid}"
    missing = {404: "RESOURCE_NOT_FOUND"}
    return [
        Route("GET", BASE, list_clients, "Connected charge points, filtered and paged",
              {200: "a page", 400: "bad filter or paging"}),
        Route("GET", one, get_client, "One charge point", {200: "the client object", **missing}),
        Route("DELETE", one, kick, "Kick: close its WebSocket with 1000", {204: "kicked", **missing}),
        Route("GET", one + "/subscriptions", subscriptions, "Its downstream subscription",
              {200: "subscriptions", **missing}),
    ]  # fmt: skip
