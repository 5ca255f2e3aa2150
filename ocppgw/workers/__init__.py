"""``[gateway] workers``: N processes on one box serving the same listening sockets.

With ``workers = 1`` (the default) none of this runs: the twistd process is the gateway. With N > 1
the twistd process is the node's master (``master.MasterService``): it binds every listener
(``sockets``), runs the management API, and spawns N workers (``python -m ocppgw.worker``), each a
normal ``GatewayService`` with its own broker connection and buffer that adopts the master's
sockets. The master talks to them over a socket pair (``control``) and re-emits their log events
(``process``).
"""

from __future__ import annotations

import math
from dataclasses import replace

from ocppgw.config import GatewayConfig, ListenerSection


def member_name(node: str, index: int) -> str:
    """Worker ``index``'s name among the node's members (presence, the API): ``<node>-w<index>``."""
    return f"{node}-w{index}"


def worker_config(config: GatewayConfig, index: int) -> GatewayConfig:
    """What worker ``index`` (1..N) of ``config``'s node runs with: its member name, its own MQTT
    client id, no management API (the master's), and its share of each listener's limits."""
    count = config.gateway.workers
    gateway = replace(config.gateway, member=member_name(config.gateway.node_name, index))
    mqtt = replace(config.mqtt, client_id=f"{config.mqtt.client_id}-{index}")
    listeners = tuple(_share(listener, count) for listener in config.listeners)
    return replace(
        config, gateway=gateway, mqtt=mqtt, api=replace(config.api, enable=False), listeners=listeners
    )


def master_client_id(config: GatewayConfig) -> str:
    """The MQTT client id of the node's master: ``<client_id>-0``."""
    return f"{config.mqtt.client_id}-0"


def _share(listener: ListenerSection, count: int) -> ListenerSection:
    """The kernel spreads connections evenly over the workers' sockets: each gets 1/N of the limits."""
    connections = listener.max_connections
    rate = listener.max_conn_rate
    return replace(
        listener,
        max_connections=None if connections is None else math.ceil(connections / count),
        max_conn_rate=None if rate is None else rate / count,
    )
