"""gw.ini: a whitelisted INI file parsed once into frozen dataclasses.

Every problem is collected before anything is raised, so an operator fixes a
bad file in one round; each line names the section and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

CHECKING_MODES = ("all", "upstream_only", "dnstream_only", "disable")


class ConfigError(Exception):
    """One or more problems in a config file; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class GatewaySection:
    mountpoint: str = "ocpp/"
    default_heartbeat_interval: float = 60.0
    heartbeat_checking_times_backoff: int = 1
    message_format_checking: str = "disable"
    json_schema_dir: Path | None = None
    json_schema_id_prefix: str = "urn:OCPP:1.6:2019:12:"
    idle_timeout: float = 30.0
    max_frame_size: int = 1048576
    ping_interval: float = 30.0
    ping_timeout: float = 10.0
    node_name: str = ""
    shutdown_timeout: float = 10.0


@dataclass(frozen=True)
class UpstreamSection:
    topic: str = "cp/${cid}"
    reply_topic: str = "cp/${cid}/Reply"
    error_topic: str = "cp/${cid}/Reply"
    qos: int = 1
    topic_override_mapping: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class DnstreamSection:
    topic: str = "cs/${cid}"
    max_mqueue_len: int = 100
    reply_timeout: float = 30.0
    qos: int = 1


@dataclass(frozen=True)
class MqttSection:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = ""
    keepalive: int = 60
    reconnect_delay_min: float = 1.0
    reconnect_delay_max: float = 30.0
    max_buffered_messages: int = 10000


@dataclass(frozen=True)
class PresenceSection:
    enable: bool = True
    topic: str = "cp/${cid}/Presence"
    node_topic: str = "gateway/${node}/Presence"
    qos: int = 1


@dataclass(frozen=True)
class ListenerSection:
    kind: str
    name: str
    host: str
    port: int
    path: str = "/ocpp"
    mountpoint: str | None = None


@dataclass(frozen=True)
class GatewayConfig:
    gateway: GatewaySection
    upstream: UpstreamSection
    dnstream: DnstreamSection
    mqtt: MqttSection
    presence: PresenceSection
    listeners: tuple[ListenerSection, ...]
    source: str = "gw.ini"
