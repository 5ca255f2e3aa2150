"""gw.ini: a whitelisted INI file parsed once into frozen dataclasses.

Every problem is collected before anything is raised, so an operator fixes a
bad file in one round; each line names the section and the key.

Values may refer to environment variables as ``${NAME}`` (for secrets such as
``password = ${MQTT_PASSWORD}``); they are substituted once, at load time.
``${cid}`` (alias ``${clientid}``) and, in ``[presence] node_topic`` only,
``${node}`` are topic template variables, filled in per charge point later.
"""

from __future__ import annotations

import configparser
import io
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

CHECKING_MODES = ("all", "upstream_only", "dnstream_only", "disable")
NETWORK_LOOPS = ("reactor", "thread")


def problem_line(source: str, section: str, key: str | None, reason: str) -> str:
    """The one form of every config problem, wherever it is found: ``gw.ini: [section] key: reason``."""
    where = f"[{section}]:" if key is None else f"[{section}] {key}:"
    return f"{source}: {where} {reason}"


class ConfigError(Exception):
    """One or more problems in a config file; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class GatewaySection:
    """``[gateway]``: settings shared by every listener and charge point."""

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


TLS_VERSIONS = ("tlsv1.3", "tlsv1.2", "tlsv1.1", "tlsv1")  # newest first
VERIFY_MODES = ("verify_none", "verify_peer")
CLIENT_CERT_IDENTITIES = ("none", "cn")


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
    reuseaddr: bool = True
    backlog: int = 1024  # listen(2) queue of the listening socket (``ocppgw.service``)
    recbuf: int | None = None
    sndbuf: int | None = None
    send_timeout: float = 15.0
    send_timeout_close: bool = True
    # PROXY protocol v1/v2 header in front of each connection (``ocppgw.ws.proxy``)
    proxy_protocol: bool = False
    proxy_protocol_timeout: float = 3.0
    ignored_options: tuple[str, ...] = ()  # accepted for compatibility, meaning nothing in Twisted


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


# -- public entry points ----------------------------------------------------


def load_config(path: str | Path) -> GatewayConfig:
    """Read and check the INI file at ``path``; relative paths in it are taken from its directory."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ConfigError([f"{source}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            [f"{source}: cannot read: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})"]
        ) from None
    except ValueError as e:  # for example a NUL in the path
        raise ConfigError([f"{source}: cannot read: {e}"]) from None
    return config_from_string(text, source=source, base_dir=Path(path).absolute().parent)


def config_from_string(
    text: str,
    source: str = "gw.ini",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewayConfig:
    """Check INI ``text`` and build the config, or raise ``ConfigError`` listing every problem.

    ``source`` starts every problem line; relative paths are resolved against
    ``base_dir`` (the current directory when None); ``${NAME}`` is looked up in
    ``environ`` (``os.environ`` when None).
    """
    reader = _Reader(
        source,
        Path.cwd() if base_dir is None else Path(base_dir),
        os.environ if environ is None else environ,
    )
    config = reader.read(text.removeprefix("\ufeff"))
    if reader.problems:
        raise ConfigError(reader.problems)
    assert config is not None
    return config


# -- values -----------------------------------------------------------------


class _Invalid(Exception):
    """A value is wrong; the message is the reason part of the problem line."""


def _got(value: str) -> str:
    """``got '<value>'``, shortened so that one problem stays one readable line."""
    if len(value) > 80:
        value = value[:77] + "..."
    return f"got {value!r}"


_INTEGER = re.compile(r"[+-]?[0-9]+")
_DURATION = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>ms|s|m|h)?")
_DURATION_EXPECTED = "expected a duration such as 500ms, 30s, 5m or 1h"
_SECONDS_PER_UNIT = {None: 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"(?P<number>[0-9]+)\s*(?P<unit>KB|MB)?", re.IGNORECASE)
_BYTES_PER_UNIT = {None: 1, "KB": 1024, "MB": 1024 * 1024}
_BOOLEANS = {
    "true": True, "yes": True, "on": True, "1": True,
    "false": False, "no": False, "off": False, "0": False,
}  # fmt: skip
_ACTION = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_LISTENER = re.compile(r"listeners\.(?P<kind>wss?)\.(?P<name>[A-Za-z0-9_-]+)")
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_CID_VARIABLES = frozenset({"cid", "clientid"})  # topic template variables, filled in per charge point
_NODE_VARIABLES = frozenset({"node"})  # the one variable of [presence] node_topic
_REFERENCE = re.compile(r"\$\{([^{}]*)\}")  # ${...}: a template variable or an environment variable
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _integer(value: str, low: int | None = None, high: int | None = None) -> int:
    """A decimal integer within ``low``..``high`` (either may be open)."""
    if not _INTEGER.fullmatch(value):
        raise _Invalid(f"expected an integer, {_got(value)}")
    try:
        number = int(value)
    except ValueError:  # more digits than int() accepts
        number = None
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        if high is None:
            raise _Invalid(f"expected an integer >= {low}, {_got(value)}")
        raise _Invalid(f"expected an integer from {low} to {high}, {_got(value)}")
    return number


def _int_min(low: int) -> Callable[[str], int]:
    return lambda value: _integer(value, low)


def _int_range(low: int, high: int) -> Callable[[str], int]:
    return lambda value: _integer(value, low, high)


def _qos(value: str) -> int:
    if value not in ("0", "1", "2"):
        raise _Invalid(f"expected 0, 1 or 2, {_got(value)}")
    return int(value)


def _port(value: str) -> int:
    return _integer(value, 1, 65535)


def parse_duration(value: str) -> float:
    """Seconds in ``500ms``, ``30s``, ``5m``, ``1h`` or a bare number of seconds such as ``2.5``.

    Raises ``ValueError`` with the reason when ``value`` is none of these.
    """
    match = _DURATION.fullmatch(value)
    seconds = math.inf
    if match is not None:
        number = float(match["number"])
        unit = match["unit"]
        seconds = number / 1000.0 if unit == "ms" else number * _SECONDS_PER_UNIT[unit]
    if not math.isfinite(seconds):
        raise ValueError(f"{_DURATION_EXPECTED}, {_got(value)}")
    return seconds


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _duration_positive(value: str) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise _Invalid(f"must be greater than 0, {_got(value)}")
    return seconds


def _size(value: str) -> int:
    match = _SIZE.fullmatch(value)
    size = None
    if match is not None:
        unit = match["unit"].upper() if match["unit"] else None
        try:
            size = int(match["number"]) * _BYTES_PER_UNIT[unit]
        except ValueError:  # more digits than int() accepts
            pass
    if size is None:
        raise _Invalid(f"expected a size in bytes such as 65536, 64KB or 1MB, {_got(value)}")
    if size <= 0:
        raise _Invalid(f"must be greater than 0, {_got(value)}")
    return size


def _boolean(value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise _Invalid(f"expected true or false, {_got(value)}") from None


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A converter accepting one of ``choices``, in any case, returned in lower case."""

    def convert(value: str) -> str:
        if value.lower() not in choices:
            raise _Invalid(f"expected one of {', '.join(choices)}, {_got(value)}")
        return value.lower()

    return convert


def _text(value: str) -> str:
    return value


def _optional_text(value: str) -> str | None:
    return value or None


def _host(value: str) -> str:
    if not value:
        raise _Invalid("must not be empty")
    if any(char.isspace() for char in value) or "\x00" in value:
        raise _Invalid(f"expected a host name or address, {_got(value)}")
    return value


def _node_name(value: str) -> str:
    """The node's name; empty means the host name, filled in later."""
    if any(char in "/+#\x00" or char.isspace() for char in value):
        raise _Invalid(f"must not contain /, +, # or whitespace, {_got(value)}")
    return value


def _fill_variables(value: str, variables: frozenset[str]) -> str:
    """``value`` with each allowed ``${var}`` replaced by a one-level stand-in."""

    def replace(match: re.Match[str]) -> str:
        if match[1] in variables:
            return "x"
        raise _Invalid(f"unknown template variable {match[0]}")

    filled = _REFERENCE.sub(replace, value)
    if "${" in filled:
        raise _Invalid(f"malformed template variable, {_got(value)}")
    return filled


def _mountpoint(value: str) -> str:
    """A topic prefix; may be empty and may hold ``${cid}``, never a wildcard."""
    filled = _fill_variables(value, _CID_VARIABLES)
    if "+" in filled or "#" in filled:
        raise _Invalid(f"must not contain the MQTT wildcards + or #, {_got(value)}")
    if "\x00" in filled:
        raise _Invalid(f"must not contain a NUL character, {_got(value)}")
    return value


def _has_cid(value: str) -> bool:
    return "${cid}" in value or "${clientid}" in value


def _topic_template(
    *, variables: frozenset[str] = frozenset(), filter_ok: bool = False, needs_cid: bool = False
) -> Callable[[str], str]:
    """A checker for a topic template: a valid MQTT topic (or filter) once the variables are in."""

    def check(value: str) -> str:
        if not value:
            raise _Invalid("must not be empty")
        filled = _fill_variables(value, variables)
        if "\x00" in filled:
            raise _Invalid(f"must not contain a NUL character, {_got(value)}")
        if len(filled.encode("utf-8", "surrogatepass")) > 65535:
            raise _Invalid("is longer than the 65535 bytes MQTT allows")
        if filter_ok:
            levels = filled.split("/")
            for index, level in enumerate(levels):
                if (
                    ("+" in level and level != "+")
                    or ("#" in level and level != "#")
                    or (level == "#" and index != len(levels) - 1)
                ):
                    raise _Invalid(
                        "expected an MQTT topic filter where + is a whole level and # only the whole "
                        f"last level, {_got(value)}"
                    )
        elif "+" in filled or "#" in filled:
            raise _Invalid(f"must not contain the MQTT wildcards + or #, {_got(value)}")
        if needs_cid and not _has_cid(value):
            raise _Invalid(f"must contain ${{cid}}, {_got(value)}")
        return value

    return check


def parse_bind(value: str) -> tuple[str, int]:
    """``(host, port)`` from ``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``; a bare port means 0.0.0.0.

    Raises ``ValueError`` with the reason when ``value`` is none of these.
    """
    forms = "expected PORT, HOST:PORT or [IPv6]:PORT"
    if value.startswith("["):
        host, bracket, port_text = value[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise ValueError(f"{forms}, {_got(value)}")
        port_text = port_text[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"expected an IPv6 address inside [ ], {_got(value)}") from None
    elif ":" in value:
        host, _, port_text = value.rpartition(":")
        if ":" in host:
            raise ValueError(f"write an IPv6 address in brackets, such as [::1]:33033, {_got(value)}")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"{forms}, {_got(value)}")
    else:
        host, port_text = "0.0.0.0", value
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise ValueError(f"{forms} with a port from 0 to 65535, {_got(value)}")
    return host, int(port_text)


def _bind(value: str) -> tuple[str, int]:
    try:
        return parse_bind(value)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _tls_versions(value: str) -> tuple[str, ...]:
    """A comma-separated list of consecutive TLS versions, newest first in the result."""
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    if not names:
        raise _Invalid(f"expected a list such as tlsv1.3,tlsv1.2, {_got(value)}")
    unknown = [name for name in names if name not in TLS_VERSIONS]
    if unknown:
        raise _Invalid(f"expected versions among {', '.join(TLS_VERSIONS)}, {_got(value)}")
    indexes = sorted({TLS_VERSIONS.index(name) for name in names})
    missing = [TLS_VERSIONS[i] for i in range(indexes[0], indexes[-1] + 1) if i not in indexes]
    if missing:
        raise _Invalid(f"expected consecutive versions, {', '.join(missing)} missing, {_got(value)}")
    return tuple(TLS_VERSIONS[i] for i in indexes)


def _ciphers(value: str) -> str | None:
    if any(char.isspace() for char in value.strip()) or "\x00" in value:
        raise _Invalid(f"expected an OpenSSL cipher string without spaces, {_got(value)}")
    return value.strip() or None


def _url_path(value: str) -> str:
    if not value.startswith("/"):
        raise _Invalid(f"must start with /, {_got(value)}")
    if value != "/" and value.endswith("/"):
        raise _Invalid(f"must not end with /, {_got(value)}")
    if any(char in "?#\x00" or char.isspace() for char in value):
        raise _Invalid(f"must not contain whitespace, ? or #, {_got(value)}")
    return value


def _count_or_infinity(value: str) -> int | None:
    """A positive integer, or ``infinity`` (None): no limit."""
    if value.lower() == "infinity":
        return None
    return _integer(value, 1)


def _rate_or_infinity(value: str) -> float | None:
    """Arrivals per second (``1000`` or ``1000/s``), or ``infinity`` (None)."""
    text = value.lower().strip()
    if text == "infinity":
        return None
    text = text.removesuffix("/s").strip()
    try:
        rate = float(text) if re.fullmatch(r"[0-9]+(\.[0-9]*)?", text) else math.nan
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise _Invalid(f"expected a number of connections per second > 0 or infinity, {_got(value)}")
    return rate


def _ignored(value: str) -> str:
    return value


# max_connections ... sndbuf: ocppgw.ws.limits, but backlog: ocppgw.service (the listen queue);
# the last four mean nothing in Twisted (README)
_LIMIT_OPTIONS: dict[str, Callable[[str], Any]] = {
    "max_connections": _count_or_infinity,
    "max_conn_rate": _rate_or_infinity,
    "nodelay": _boolean,
    "reuseaddr": _boolean,
    "backlog": _int_range(1, 65535),
    "recbuf": _size,
    "sndbuf": _size,
    "send_timeout": _duration_positive,
    "send_timeout_close": _boolean,
    "acceptors": _ignored,
    "active_n": _ignored,
    "buffer": _ignored,
    "high_watermark": _ignored,
}
IGNORED_LISTENER_OPTIONS = ("acceptors", "active_n", "buffer", "high_watermark")


# -- the whitelist ----------------------------------------------------------


@dataclass(frozen=True)
class _Option:
    """How one key is read: its converter, the template variables it may hold, whether it is secret."""

    convert: Callable[[str], Any]
    variables: frozenset[str] = frozenset()
    secret: bool = False


_UPSTREAM_TOPIC = _Option(_topic_template(variables=_CID_VARIABLES, needs_cid=True), _CID_VARIABLES)
_MOUNTPOINT = _Option(_mountpoint, _CID_VARIABLES)
_JSON_SCHEMA_DIR = "json_schema_dir"  # converted by _Reader, which knows base_dir

_SECTIONS: dict[str, dict[str, _Option]] = {
    "gateway": {
        "mountpoint": _MOUNTPOINT,
        "default_heartbeat_interval": _Option(_duration),
        "heartbeat_checking_times_backoff": _Option(_int_min(1)),
        "message_format_checking": _Option(_one_of(CHECKING_MODES)),
        _JSON_SCHEMA_DIR: _Option(_text),
        "json_schema_id_prefix": _Option(_text),
        "idle_timeout": _Option(_duration_positive),
        "max_frame_size": _Option(_size),
        "ping_interval": _Option(_duration),
        "ping_timeout": _Option(_duration_positive),
        "node_name": _Option(_node_name),
        "shutdown_timeout": _Option(_duration_positive),
    },
    "upstream": {
        "topic": _UPSTREAM_TOPIC,
        "reply_topic": _UPSTREAM_TOPIC,
        "error_topic": _UPSTREAM_TOPIC,
        "qos": _Option(_qos),
    },
    "dnstream": {
        "topic": _Option(
            _topic_template(variables=_CID_VARIABLES, filter_ok=True, needs_cid=True), _CID_VARIABLES
        ),
        "max_mqueue_len": _Option(_int_min(0)),
        "reply_timeout": _Option(_duration_positive),
        "qos": _Option(_qos),
    },
    "mqtt": {
        "host": _Option(_host),
        "port": _Option(_port),
        "username": _Option(_optional_text),
        "password": _Option(_optional_text, secret=True),
        "client_id": _Option(_text),
        "keepalive": _Option(_int_range(1, 65535)),
        "reconnect_delay_min": _Option(_duration_positive),
        "reconnect_delay_max": _Option(_duration_positive),
        "max_buffered_messages": _Option(_int_min(1)),
        "network_loop": _Option(_one_of(NETWORK_LOOPS)),
        "tls": _Option(_boolean),
        "cacertfile": _Option(_text),  # the three paths: converted by _Reader, which knows base_dir
        "certfile": _Option(_text),
        "keyfile": _Option(_text),
        "keyfile_password": _Option(_optional_text, secret=True),
        "verify_hostname": _Option(_boolean),
        "tls_server_name": _Option(_optional_text),
    },
    "presence": {
        "enable": _Option(_boolean),
        "topic": _Option(_topic_template(variables=_CID_VARIABLES), _CID_VARIABLES),
        "node_topic": _Option(_topic_template(variables=_NODE_VARIABLES), _NODE_VARIABLES),
        "qos": _Option(_qos),
    },
}
_OVERRIDE_SECTION = "upstream.topic_override_mapping"
_OVERRIDE_TOPIC = _UPSTREAM_TOPIC
_LISTENER_OPTIONS: dict[str, _Option] = {
    "bind": _Option(_bind),
    "path": _Option(_url_path),
    "mountpoint": _MOUNTPOINT,
    **{key: _Option(convert) for key, convert in _LIMIT_OPTIONS.items()},
    "proxy_protocol": _Option(_boolean),
    "proxy_protocol_timeout": _Option(_duration_positive),
}
_TLS_PATHS = ("certfile", "keyfile", "cacertfile")  # converted by _Reader, which knows base_dir
_TLS_OPTIONS: dict[str, _Option] = {
    "certfile": _Option(_text),
    "keyfile": _Option(_text),
    "password": _Option(_optional_text, secret=True),
    "cacertfile": _Option(_text),
    "verify": _Option(_one_of(VERIFY_MODES)),
    "fail_if_no_peer_cert": _Option(_boolean),
    "depth": _Option(_int_range(0, 100)),
    "versions": _Option(_tls_versions),
    "ciphers": _Option(_ciphers),
    "handshake_timeout": _Option(_duration_positive),
    "client_cert_identity": _Option(_one_of(CLIENT_CERT_IDENTITIES)),
}
_WSS_LISTENER_OPTIONS: dict[str, _Option] = {**_LISTENER_OPTIONS, **_TLS_OPTIONS}


def _seconds(value: float) -> str:
    return f"{value:g}s"


class _Reader:
    """Reads one file's text, collecting problem lines in ``problems``."""

    def __init__(self, source: str, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.source = source
        self.base_dir = base_dir
        self.environ = environ
        self.problems: list[str] = []
        self.texts: dict[tuple[str, str], str] = {}  # (section, key) -> value after ${NAME} substitution
        self._token = ""

    def problem(self, section: str, key: str | None, reason: str) -> None:
        self.problems.append(problem_line(self.source, section, key, reason))

    # -- INI syntax ---------------------------------------------------------

    def parse(self, text: str) -> configparser.ConfigParser:
        """The parsed INI; syntax problems are recorded and the offending lines set aside.

        configparser stops at the first duplicate section or key, so each one is
        reported, renamed to a placeholder this reader ignores, and the text parsed again.
        """
        token = "\x00dup"
        while token in text:
            token += "\x00"
        self._token = token
        lines = io.StringIO(text).readlines()  # the same lines configparser.read_string sees
        renamed = 0
        for _attempt in range(len(lines) + 2):
            parser = configparser.ConfigParser(
                interpolation=None,
                inline_comment_prefixes=(";", "#"),
                strict=True,
                default_section=token + "default",  # so that [DEFAULT] is just an unknown section
            )
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            try:
                parser.read_string("".join(lines), source=self.source)
            except configparser.DuplicateSectionError as e:
                self.problems.append(f"{self.source}: [{e.section}]: duplicate section (line {e.lineno})")
                renamed += 1
                lines[e.lineno - 1] = _replace_line(lines[e.lineno - 1], f"[{token}{renamed}]")
            except configparser.DuplicateOptionError as e:
                if e.option:  # an empty key is reported as unparsable below
                    self.problems.append(
                        f"{self.source}: [{e.section}] {e.option}: duplicate option (line {e.lineno})"
                    )
                renamed += 1
                lines[e.lineno - 1] = _replace_line(lines[e.lineno - 1], f"{token}{renamed} =")
            except configparser.MissingSectionHeaderError as e:
                self.problems.append(
                    f"{self.source}: line {e.lineno}: text before the first [section] header"
                )
                lines[e.lineno - 1] = "\n"
            except configparser.ParsingError as e:
                for lineno, _line in e.errors:  # the line itself may hold a password: not quoted
                    self.problems.append(
                        f"{self.source}: line {lineno}: expected 'key = value' or a [section] header"
                    )
                return parser  # configparser read the rest of the file
            except configparser.Error as e:  # no other kind is known; kept as one line, not a traceback
                self.problems.append(f"{self.source}: {e.message.splitlines()[0]}")
                return configparser.ConfigParser()
            else:
                return parser
        self.problems.append(f"{self.source}: cannot parse this file")
        return configparser.ConfigParser()

    def _ignored(self, name: str) -> bool:
        return name.startswith(self._token) or name == ""

    # -- values -------------------------------------------------------------

    def expand(self, section: str, key: str, raw: str, option: _Option) -> str | None:
        """``raw`` with each ``${NAME}`` taken from the environment; None after a problem."""
        if "\n" in raw:
            self.problem(section, key, "expected one line; an indented line continues the value above it")
            return None
        if _malformed_reference(raw):
            shown = "" if option.secret else f", {_got(raw)}"
            self.problem(section, key, f"malformed ${{...}}, write ${{NAME}}{shown}")
            return None
        ok = True

        def replace(match: re.Match[str]) -> str:
            nonlocal ok
            name = match[1]
            if name in option.variables:
                return match[0]
            ok = False
            if name in _CID_VARIABLES and option.variables == _NODE_VARIABLES:
                self.problem(section, key, f"{match[0]} is not allowed here, use ${{node}}")
            elif name in _CID_VARIABLES:
                self.problem(section, key, f"{match[0]} is only allowed in topic templates and mountpoints")
            elif name in _NODE_VARIABLES:
                self.problem(section, key, "${node} is only allowed in [presence] node_topic")
            elif name not in self.environ:
                self.problem(section, key, f"environment variable {name} is not set")
            else:
                ok = True
                return self.environ[name]
            return ""

        expanded = _REFERENCE.sub(replace, raw)
        return expanded if ok else None

    def read_section(
        self, parser: configparser.ConfigParser, section: str, options: Mapping[str, _Option]
    ) -> dict[str, Any]:
        """The converted values of one section's keys, by key; problems recorded."""
        values: dict[str, Any] = {}
        for key, raw in parser.items(section, raw=True):
            if self._ignored(key):
                continue
            option = options.get(key)
            if option is None:
                self.problem(section, key, "unknown option")
                continue
            value = self.expand(section, key, raw, option)
            if value is None:
                continue
            self.texts[section, key] = value
            try:
                if section == "gateway" and key == _JSON_SCHEMA_DIR:
                    values[key] = self.schema_dir(value)
                elif (section.startswith("listeners.wss.") or section == "mqtt") and key in _TLS_PATHS:
                    values[key] = self.file_path(value)
                else:
                    values[key] = option.convert(value)
            except _Invalid as e:
                self.problem(section, key, str(e))
        return values

    def schema_dir(self, value: str) -> Path | None:
        if not value:
            return None
        path = self.base_dir / value
        try:
            is_dir = path.is_dir()
        except (OSError, ValueError):
            is_dir = False
        if not is_dir:
            shown = "" if str(path) == value else f" ({path})"
            raise _Invalid(f"expected an existing directory, {_got(value)}{shown}")
        return path

    def file_path(self, value: str) -> Path | None:
        """``value`` taken from ``base_dir``; the file itself is read later, by ``ocppgw.tls``."""
        if not value:
            return None
        if "\x00" in value:
            raise _Invalid("must not contain a NUL character")
        return self.base_dir / value

    # -- the whole file -----------------------------------------------------

    def read(self, text: str) -> GatewayConfig | None:
        parser = self.parse(text)
        found: dict[str, dict[str, Any]] = {}
        listeners: list[tuple[str, str, dict[str, Any]]] = []
        overrides: dict[str, str] = {}
        listener_sections = 0
        for section in parser.sections():
            if self._ignored(section):
                continue
            if section in _SECTIONS:
                found[section] = self.read_section(parser, section, _SECTIONS[section])
            elif section == _OVERRIDE_SECTION:
                overrides = self.read_overrides(parser)
            elif (match := _LISTENER.fullmatch(section)) is not None:
                listener_sections += 1
                kind = match["kind"]
                values = self.read_section(
                    parser, section, _WSS_LISTENER_OPTIONS if kind == "wss" else _LISTENER_OPTIONS
                )
                if "bind" not in values and not parser.has_option(section, "bind"):
                    self.problem(section, "bind", "missing, expected PORT, HOST:PORT or [IPv6]:PORT")
                listeners.append((kind, match["name"], values))
            else:
                self.problem(section, None, "unknown section")
        if listener_sections == 0:
            self.problem("listeners.ws.<name>", None, "no listener configured")

        gateway_values = found.get("gateway", {})
        if not gateway_values.get("node_name"):
            gateway_values["node_name"] = socket.gethostname()
        mqtt_values = found.get("mqtt", {})
        if not mqtt_values.get("client_id"):
            mqtt_values["client_id"] = f"ocppgw-{gateway_values['node_name']}"
        self.check_reconnect_delays(parser, mqtt_values)
        self.check_mqtt_tls(parser, mqtt_values)
        built = self.build_listeners(parser, listeners)
        if self.problems:
            return None
        return GatewayConfig(
            gateway=GatewaySection(**gateway_values),
            upstream=UpstreamSection(
                **found.get("upstream", {}), topic_override_mapping=MappingProxyType(overrides)
            ),
            dnstream=DnstreamSection(**found.get("dnstream", {})),
            mqtt=MqttSection(**mqtt_values),
            presence=PresenceSection(**found.get("presence", {})),
            listeners=built,
            source=self.source,
        )

    def read_overrides(self, parser: configparser.ConfigParser) -> dict[str, str]:
        overrides: dict[str, str] = {}
        for key, raw in parser.items(_OVERRIDE_SECTION, raw=True):
            if self._ignored(key):
                continue
            if not _ACTION.fullmatch(key):
                self.problem(_OVERRIDE_SECTION, key, "not an action name")
                continue
            value = self.expand(_OVERRIDE_SECTION, key, raw, _OVERRIDE_TOPIC)
            if value is None:
                continue
            try:
                overrides[key] = _OVERRIDE_TOPIC.convert(value)
            except _Invalid as e:
                self.problem(_OVERRIDE_SECTION, key, str(e))
        return overrides

    def check_mqtt_tls(self, parser: configparser.ConfigParser, values: dict[str, Any]) -> None:
        """``[mqtt]`` certfile and keyfile come together."""
        for key, other in (("certfile", "keyfile"), ("keyfile", "certfile")):
            if (
                values.get(key) is not None
                and values.get(other) is None
                and not parser.has_option("mqtt", other)
            ):
                self.problem("mqtt", other, f"missing, expected the path of a PEM file (set with {key})")

    def check_reconnect_delays(self, parser: configparser.ConfigParser, values: dict[str, Any]) -> None:
        low = values.get("reconnect_delay_min", MqttSection.reconnect_delay_min)
        high = values.get("reconnect_delay_max", MqttSection.reconnect_delay_max)
        for key in ("reconnect_delay_min", "reconnect_delay_max"):
            if parser.has_option("mqtt", key) and key not in values:
                return  # already reported
        if low > high:
            given = self.texts.get(("mqtt", "reconnect_delay_max"))
            self.problem(
                "mqtt",
                "reconnect_delay_max",
                f"must not be less than reconnect_delay_min ({_seconds(low)}), "
                + (_got(given) if given is not None else f"got the default {_seconds(high)}"),
            )

    def build_tls(self, parser: configparser.ConfigParser, section: str, values: dict[str, Any]) -> Any:
        """The ``TlsSection`` of a wss section's TLS keys, taken out of ``values``; None after a problem."""
        tls = {key: values.pop(key) for key in list(values) if key in _TLS_OPTIONS}
        ok = True
        for key in ("certfile", "keyfile"):
            if tls.get(key) is None:
                ok = False
                if not parser.has_option(section, key) or not self.texts.get((section, key), "x"):
                    self.problem(section, key, "missing, expected the path of a PEM file")
        if any(parser.has_option(section, key) and key not in tls for key in _TLS_OPTIONS):
            ok = False  # already reported
        verify = tls.get("verify", TlsSection.verify)
        if verify == "verify_peer" and tls.get("cacertfile") is None:
            ok = False
            self.problem(
                section, "cacertfile", "missing, verify_peer needs the CA file that signs client certificates"
            )
        if (
            tls.get("client_cert_identity", TlsSection.client_cert_identity) != "none"
            and verify != "verify_peer"
        ):
            ok = False
            self.problem(
                section, "client_cert_identity", f"needs verify = verify_peer, got verify = {verify}"
            )
        if tls.get("fail_if_no_peer_cert") and verify != "verify_peer":
            ok = False
            self.problem(
                section, "fail_if_no_peer_cert", f"needs verify = verify_peer, got verify = {verify}"
            )
        if not ok:
            return None
        if tls.get("cacertfile") is None:
            tls.pop("cacertfile", None)
        return TlsSection(**tls)

    def build_listeners(
        self, parser: configparser.ConfigParser, listeners: list[tuple[str, str, dict[str, Any]]]
    ) -> tuple[ListenerSection, ...]:
        built: list[ListenerSection] = []
        taken: dict[tuple[str, int], str] = {}
        for kind, name, values in listeners:
            section = f"listeners.{kind}.{name}"
            if kind == "wss":
                values["tls"] = self.build_tls(parser, section, values)
                if values["tls"] is None:
                    continue
            if "bind" not in values:
                continue
            host, port = values.pop("bind")
            ignored = tuple(key for key in IGNORED_LISTENER_OPTIONS if values.pop(key, None) is not None)
            if ignored:
                values["ignored_options"] = ignored
            if port != 0:
                address = (_normal_host(host), port)
                if address in taken:
                    self.problem(section, "bind", f"{host}:{port} is already used by [{taken[address]}]")
                    continue
                taken[address] = section
            built.append(ListenerSection(kind=kind, name=name, host=host, port=port, **values))
        return tuple(built)


def _malformed_reference(raw: str) -> bool:
    """Whether ``raw`` holds a ``${`` that does not open a well-formed ``${NAME}``."""
    rest = _REFERENCE.sub(lambda m: "_" if _ENV_NAME.fullmatch(m[1]) else "${", raw)
    return "${" in rest


def _replace_line(line: str, replacement: str) -> str:
    """``replacement`` with ``line``'s indentation and line end, so the INI structure stays the same."""
    indent = line[: len(line) - len(line.lstrip())]
    if "\n" in indent:  # a line of only whitespace; not expected here
        indent = ""
    return indent + replacement + ("\n" if line.endswith("\n") else "")


def _normal_host(host: str) -> str:
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower()
