"""The typed sections of gw.ini: frozen dataclasses, one per section, defaults in the fields.

Built by ``ocppgw.config.loader`` once the whole file is checked; the rest of the gateway reads
only these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from types import MappingProxyType

# Listener keys accepted for compatibility that change nothing in Twisted, logged at start by
# ocppgw.ws.limits: one reactor accepts every connection and reads whenever data arrives, and
# Twisted always sets SO_REUSEADDR on POSIX listening ports (so only ``reuseaddr = false`` is ignored).
IGNORED_LISTENER_OPTIONS = ("acceptors", "active_n", "buffer", "high_watermark", "reuseaddr")


@dataclass(frozen=True)
class GatewaySection:
    """``[gateway]``: settings shared by every listener and charge point."""

    enable: bool = True  # false: no listener listens (PUT /gateways/ocpp/enable/false saves it)
    mountpoint: str = "ocpp/"
    default_heartbeat_interval: float = 60.0
    heartbeat_checking_times_backoff: int = 1
    message_format_checking: str = "disable"
    json_schema_dir: Path | None = None
    json_schema_id_prefix: str = "urn:OCPP:1.6:2019:12:"
    idle_timeout: float = 30.0
    max_frame_size: int = 1048576  # what a charge point may send in one message
    max_outgoing_frame_size: int = 0  # what the gateway sends; 0 (unset): max_frame_size
    max_unique_id_length: int = 128
    max_handshake_size: int = 16384  # bytes of the HTTP upgrade request
    max_inflight_bytes: int = 64 * 1024 * 1024  # message bytes being received, gateway-wide
    ping_interval: float = 30.0
    ping_timeout: float = 10.0
    node_name: str = ""
    # this process's name among the gateway's members (control topics, presence): node_name unless a
    # process of several on one node is named otherwise; not a gw.ini key
    member: str = ""
    shutdown_timeout: float = 10.0
    data_dir: Path = Path("data")  # state such as users.sqlite; the loader resolves it next to gw.ini
    workers: int = 1  # processes serving the listeners (``ocppgw.workers``); 1: this process alone
    # this process's name among the node's (not in gw.ini): node_name, or <node_name>-w<i> in a worker
    member: str = ""

    def __post_init__(self) -> None:
        if not self.member:
            object.__setattr__(self, "member", self.node_name)
        if not self.max_outgoing_frame_size:
            object.__setattr__(self, "max_outgoing_frame_size", self.max_frame_size)
        if not self.member:
            object.__setattr__(self, "member", self.node_name)


@dataclass(frozen=True)
class UpstreamSection:
    """``[upstream]`` and ``[upstream.topic_override_mapping]``: charge point -> MQTT."""

    topic: str = "cp/${cid}"
    reply_topic: str = "cp/${cid}/Reply"
    error_topic: str = "cp/${cid}/Reply"
    qos: int = 1
    topic_override_mapping: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class DnstreamSection:
    """``[dnstream]``: MQTT -> charge point."""

    topic: str = "cs/${cid}"
    max_mqueue_len: int = 100
    reply_timeout: float = 30.0
    qos: int = 1
    subscription_linger: float = 60.0  # a charge point's subscription outlives its connection so long


@dataclass(frozen=True)
class MqttSection:
    """``[mqtt]``: the broker connection; ``password`` stays out of ``repr``."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str = ""
    keepalive: int = 60
    reconnect_delay_min: float = 1.0
    reconnect_delay_max: float = 30.0
    max_buffered_messages: int = 10000
    network_loop: str = "reactor"  # who drives paho: the reactor, or paho's own thread
    broker: str = "generic"  # whose topic rules apply: generic (MQTT 3.1.1), rabbitmq or nats
    quickack: bool = True  # TCP_QUICKACK on the broker socket after each read (reactor loop, Linux)
    # TLS to the broker (``ocppgw.tls.broker``); paths are absolute, the files read at start-up
    tls: bool = False
    cacertfile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    keyfile_password: str | None = field(default=None, repr=False)
    verify_hostname: bool = True
    tls_server_name: str | None = None


@dataclass(frozen=True)
class PresenceSection:
    """``[presence]``: retained online/offline messages per charge point and per node."""

    enable: bool = True
    topic: str = "cp/${cid}/Presence"
    node_topic: str = "gateway/${node}/Presence"
    qos: int = 1


@dataclass(frozen=True)
class ApiSection:
    """``[api]``: the management API (``ocppgw.api``); HTTPS when certfile and keyfile are set."""

    enable: bool = True
    host: str = "127.0.0.1"
    port: int = 18083
    certfile: Path | None = None
    keyfile: Path | None = None
    password: str | None = field(default=None, repr=False)
    bootstrap_file: Path | None = None  # API keys, one ``key:secret[:role]`` a line
    token_ttl: float = 3600.0  # a login token's life, extended on use
    login_max_failures: int = 5  # failed logins a minute per address before LOGIN_LOCKED


@dataclass(frozen=True)
class TlsSection:
    """The TLS keys of a ``[listeners.wss.<name>]`` section; ``password`` stays out of ``repr``.

    Paths are absolute (resolved against the INI's directory); the files are read by
    ``ocppgw.tls`` at start-up.
    """

    certfile: Path
    keyfile: Path
    password: str | None = field(default=None, repr=False)
    cacertfile: Path | None = None
    verify: str = "verify_none"
    fail_if_no_peer_cert: bool = False
    depth: int = 10
    versions: tuple[str, ...] = ("tlsv1.3", "tlsv1.2")
    ciphers: str | None = None
    handshake_timeout: float = 15.0
    client_cert_identity: str = "none"


@dataclass(frozen=True)
class ListenerSection:
    """``[listeners.ws.<name>]`` or ``[listeners.wss.<name>]``: one WebSocket listener.

    ``tls`` is set for ``kind == "wss"`` only.
    """

    kind: str
    name: str
    host: str
    port: int
    path: str = "/ocpp"
    mountpoint: str | None = None
    tls: TlsSection | None = None
    # limits and TCP options (``ocppgw.ws.limits``); None means infinity
    max_connections: int | None = 1024000
    max_conn_rate: float | None = 1000.0
    nodelay: bool = True
    reuseaddr: bool = True  # as written; Twisted sets SO_REUSEADDR on POSIX listening ports regardless
    backlog: int = 1024  # listen(2) queue of the listening socket (``ocppgw.service``)
    recbuf: int | None = None
    sndbuf: int | None = None
    send_timeout: float = 15.0
    send_timeout_close: bool = True
    # PROXY protocol v1/v2 header in front of each connection (``ocppgw.ws.proxy``)
    proxy_protocol: bool = False
    proxy_protocol_timeout: float = 3.0
    # the WebSocket handshake (``ocppgw.ws.server``)
    supported_subprotocols: tuple[str, ...] = ("ocpp1.6",)
    fail_if_no_subprotocol: bool = False
    proxy_address_header: str = ""  # e.g. x-forwarded-for, honoured only from trusted_proxies
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    compress: bool = False  # permessage-deflate when the charge point offers it
    ignored_options: tuple[str, ...] = ()  # keys of IGNORED_LISTENER_OPTIONS set to no effect

    @property
    def label(self) -> str:
        """``<kind>.<name>``, such as ``ws.default``: the listener in logs and metrics."""
        return f"{self.kind}.{self.name}"

    @property
    def section(self) -> str:
        """``listeners.<kind>.<name>``: the listener's gw.ini section, as problem lines name it."""
        return f"listeners.{self.label}"


@dataclass(frozen=True)
class AuthenticationSection:
    """``[authentication]`` and its subsections: who may connect (``ocppgw.auth``).

    One section for every backend, as the reference's authenticator objects; each backend reads the
    fields it needs, and the loader checks those of the chosen ``backend``. Templates (url, body,
    headers, query, cmd, filter, verify_claims) keep their ``${clientid}``-style placeholders, filled in
    per handshake by ``ocppgw.auth.template``. Secrets stay out of ``repr``.
    """

    backend: str  # built_in_database | http | jwt | postgresql | mysql | redis | mongodb
    enable: bool = True
    mechanism: str = "password_based"  # or jwt; accepted for compatibility, implied by backend
    request_timeout: float = 5.0
    cache_ttl: float = 0.0  # seconds a successful decision is kept; 0: off
    # password hashing: built_in_database, postgresql, mysql, redis, mongodb
    password_hash_algorithm: str = "sha256"  # plain | md5 | sha | sha256 | sha512 | bcrypt | pbkdf2
    salt_position: str = "prefix"  # prefix | suffix | disable
    salt_rounds: int = 10  # bcrypt, 5..31
    mac_fun: str = "sha256"  # pbkdf2: sha | sha224 | sha256 | sha384 | sha512
    iterations: int = 4096  # pbkdf2
    dk_length: int | None = None  # pbkdf2; None: the digest's size
    hashing_priority: str = "idle"  # bcrypt/pbkdf2 processes: idle (a cpu.idle group where possible) | low
    # built_in_database
    user_id_type: str = "username"  # or clientid
    # http
    method: str = "post"
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)  # secrets
    body: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ssl_cacertfile: Path | None = None  # also postgresql, mysql, redis, mongodb, jwt's JWKS endpoint
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_verify: bool = True
    # jwt
    jwt_from: str = "password"  # gw.ini key "from": password | username
    algorithm: str = "hmac-based"  # or public-key
    secret: str | None = field(default=None, repr=False)
    secret_base64_encoded: bool = False
    public_key: Path | None = None  # a PEM file
    use_jwks: bool = False
    endpoint: str = ""  # the JWKS URL
    refresh_interval: float = 300.0
    verify_claims: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # postgresql, mysql, redis, mongodb
    server: str = ""  # host:port
    database: str = ""  # a name; redis: a number
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    pool_size: int = 8
    query: str = ""  # postgresql, mysql
    redis_type: str = "single"
    cmd: str = ""  # redis: HGET/HMGET key field...
    mongo_type: str = "single"
    collection: str = ""
    filter: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    password_hash_field: str = "password_hash"
    salt_field: str = "salt"
    is_superuser_field: str = "is_superuser"
    auth_source: str = ""


@dataclass(frozen=True)
class GatewayConfig:
    """The whole file; ``source`` names it in messages."""

    gateway: GatewaySection
    upstream: UpstreamSection
    dnstream: DnstreamSection
    mqtt: MqttSection
    presence: PresenceSection
    listeners: tuple[ListenerSection, ...]
    source: str = "gw.ini"
    authentication: AuthenticationSection | None = None  # None: no [authentication], or enable = false
    api: ApiSection = field(default_factory=ApiSection)
