"""Reading gw.ini: INI syntax, the whitelist of sections and keys, ``${NAME}`` substitution.

Every problem is recorded as one line and reading goes on, so that an operator fixes a bad
file in one round. The reader only converts each key on its own (``ocppgw.config.values``);
checks across keys and the typed sections are ``ocppgw.config.loader``'s.
"""

from __future__ import annotations

import configparser
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocppgw.config import authentication as auth
from ocppgw.config import values as v
from ocppgw.config.errors import problem_line
from ocppgw.config.values import MappingRule, Option
from ocppgw.core.topics import BROKERS, CID_VARIABLES, NODE_VARIABLES, REFERENCE

OVERRIDE_SECTION = "upstream.topic_override_mapping"
_LISTENER = re.compile(r"listeners\.(?P<kind>wss?)\.(?P<name>[A-Za-z0-9_-]+)")
_ACTION = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMENT_PREFIXES = (";", "#")  # inline too, when whitespace comes before them


# -- the whitelist ----------------------------------------------------------


@dataclass(frozen=True)
class Whitelist:
    """Every key gw.ini may hold, by section, and how each is read."""

    sections: Mapping[str, Mapping[str, Option]]  # [gateway], [upstream], ...
    listeners: Mapping[str, Mapping[str, Option]]  # by kind: [listeners.ws.<name>], [listeners.wss.<name>]
    mappings: Mapping[str, MappingRule]  # [upstream.topic_override_mapping], [authentication.headers], ...


_UPSTREAM_TOPIC = Option(v.topic_template(variables=CID_VARIABLES, needs_cid=True), CID_VARIABLES)
_MOUNTPOINT = Option(v.mountpoint, CID_VARIABLES)


def whitelist(base_dir: Path) -> Whitelist:
    """The keys of gw.ini; relative paths in values are taken from ``base_dir``."""
    directory = Option(v.directory_in(base_dir))
    path = Option(v.file_in(base_dir))
    listener = {
        "bind": Option(v.bind, required="expected PORT, HOST:PORT or [IPv6]:PORT"),
        "path": Option(v.url_path),
        "mountpoint": _MOUNTPOINT,
        # limits and TCP options: ocppgw.ws.limits, but backlog: the listen queue (ocppgw.service)
        "max_connections": Option(v.count_or_infinity),
        "max_conn_rate": Option(v.rate_or_infinity),
        "nodelay": Option(v.boolean),
        "reuseaddr": Option(v.boolean),
        "backlog": Option(v.int_range(1, 65535)),
        "recbuf": Option(v.size),
        "sndbuf": Option(v.size),
        "send_timeout": Option(v.duration_positive),
        "send_timeout_close": Option(v.boolean),
        # with reuseaddr, the IGNORED_LISTENER_OPTIONS: any value, logged as ignored
        "acceptors": Option(v.text),
        "active_n": Option(v.text),
        "buffer": Option(v.text),
        "high_watermark": Option(v.text),
        "proxy_protocol": Option(v.boolean),
        "proxy_protocol_timeout": Option(v.duration_positive),
        # the WebSocket handshake and frames (ocppgw.ws.server)
        "supported_subprotocols": Option(v.subprotocols),
        "fail_if_no_subprotocol": Option(v.boolean),
        "proxy_address_header": Option(v.header_name),
        "trusted_proxies": Option(v.networks),
        "compress": Option(v.boolean),
    }
    tls = {
        "certfile": path,
        "keyfile": path,
        "password": Option(v.optional_text, secret=True),
        "cacertfile": path,
        "verify": Option(v.one_of(v.VERIFY_MODES)),
        "fail_if_no_peer_cert": Option(v.boolean),
        "depth": Option(v.int_range(0, 100)),
        "versions": Option(v.tls_versions),
        "ciphers": Option(v.ciphers),
        "handshake_timeout": Option(v.duration_positive),
        "client_cert_identity": Option(v.one_of(v.CLIENT_CERT_IDENTITIES)),
    }
    sections = {
        "gateway": {
            "enable": Option(v.boolean),
            "mountpoint": _MOUNTPOINT,
            "default_heartbeat_interval": Option(v.duration),
            "heartbeat_checking_times_backoff": Option(v.int_min(1)),
            "message_format_checking": Option(v.one_of(v.CHECKING_MODES)),
            "json_schema_dir": directory,
            "json_schema_id_prefix": Option(v.text),
            "idle_timeout": Option(v.duration_positive),
            "max_frame_size": Option(v.size),
            "max_outgoing_frame_size": Option(v.size),
            "max_unique_id_length": Option(v.int_min(1)),
            "max_handshake_size": Option(v.size),
            "max_inflight_bytes": Option(v.size),
            "ping_interval": Option(v.duration),
            "ping_timeout": Option(v.duration_positive),
            "node_name": Option(v.node_name),
            "shutdown_timeout": Option(v.duration_positive),
            "workers": Option(v.workers),
            "data_dir": Option(v.path_in(base_dir)),
        },
        "upstream": {
            "topic": _UPSTREAM_TOPIC,
            "reply_topic": _UPSTREAM_TOPIC,
            "error_topic": _UPSTREAM_TOPIC,
            "qos": Option(v.qos),
        },
        "dnstream": {
            "topic": Option(
                v.topic_template(variables=CID_VARIABLES, is_filter=True, needs_cid=True), CID_VARIABLES
            ),
            "max_mqueue_len": Option(v.int_min(0)),
            "reply_timeout": Option(v.duration_positive),
            "qos": Option(v.qos),
            "subscription_linger": Option(v.duration),
        },
        "mqtt": {
            "host": Option(v.host),
            "port": Option(v.port),
            "username": Option(v.optional_text),
            "password": Option(v.optional_text, secret=True),
            "client_id": Option(v.text),
            "keepalive": Option(v.int_range(1, 65535)),
            "reconnect_delay_min": Option(v.duration_positive),
            "reconnect_delay_max": Option(v.duration_positive),
            "max_buffered_messages": Option(v.int_min(1)),
            "network_loop": Option(v.one_of(v.NETWORK_LOOPS)),
            "broker": Option(v.one_of(BROKERS)),
            "quickack": Option(v.boolean),
            "tls": Option(v.boolean),
            "cacertfile": path,
            "certfile": path,
            "keyfile": path,
            "keyfile_password": Option(v.optional_text, secret=True),
            "verify_hostname": Option(v.boolean),
            "tls_server_name": Option(v.optional_text),
        },
        "api": {
            "enable": Option(v.boolean),
            "bind": Option(v.bind),
            "certfile": path,
            "keyfile": path,
            "password": Option(v.optional_text, secret=True),
            "bootstrap_file": path,
            "token_ttl": Option(v.duration_positive),
            "login_max_failures": Option(v.int_min(1)),
        },
        "presence": {
            "enable": Option(v.boolean),
            "topic": Option(v.topic_template(variables=CID_VARIABLES), CID_VARIABLES),
            "node_topic": Option(v.topic_template(variables=NODE_VARIABLES), NODE_VARIABLES),
            "qos": Option(v.qos),
        },
    }
    sections[auth.SECTION] = auth.options(base_dir)
    mappings = {OVERRIDE_SECTION: MappingRule(_action_problem, _UPSTREAM_TOPIC), **auth.MAPPINGS}
    return Whitelist(sections, {"ws": listener, "wss": {**listener, **tls}}, mappings)


def _action_problem(key: str) -> str | None:
    return None if _ACTION.fullmatch(key) else "not an action name"


# -- reading ----------------------------------------------------------------


@dataclass
class IniValues:
    """What the reader found, converted key by key; a key with a problem is left out."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (section, kind, name, values) of each listener section, in file order
    listeners: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    mappings: dict[str, dict[str, Any]] = field(default_factory=dict)  # by section, as the file has them
    written: set[tuple[str, str]] = field(default_factory=set)  # (section, key) of every key in the file
    texts: dict[tuple[str, str], str] = field(default_factory=dict)  # after ${NAME} substitution


class IniReader:
    """Reads one file's text against a whitelist, collecting problem lines in ``problems``."""

    def __init__(self, source: str, whitelist: Whitelist, environ: Mapping[str, str]) -> None:
        self.source = source
        self.whitelist = whitelist
        self.environ = environ
        self.problems: list[str] = []
        self._token = ""  # starts the placeholder names of set-aside duplicates

    def problem(self, section: str, key: str | None, reason: str) -> None:
        self.problems.append(problem_line(self.source, section, key, reason))

    def read(self, text: str) -> IniValues:
        """Every section of ``text``, each key checked against the whitelist and converted."""
        parser = self.parse(text)
        found = IniValues()
        for section in parser.sections():
            if self._set_aside(section):
                continue
            if section in self.whitelist.sections:
                found.sections[section] = self.read_section(
                    parser, section, self.whitelist.sections[section], found
                )
            elif section in self.whitelist.mappings:
                found.mappings[section] = self.read_mapping(parser, section, found)
            elif (match := _LISTENER.fullmatch(section)) is not None:
                kind, name = match["kind"], match["name"]
                values = self.read_section(parser, section, self.whitelist.listeners[kind], found)
                found.listeners.append((section, kind, name, values))
            else:
                self.problem(section, None, "unknown section")
        if not found.listeners:
            self.problem("listeners.ws.<name>", None, "no listener configured")
        return found

    def read_section(
        self,
        parser: configparser.ConfigParser,
        section: str,
        options: Mapping[str, Option],
        found: IniValues,
    ) -> dict[str, Any]:
        """The converted values of one section's keys, by key; problems recorded."""
        result: dict[str, Any] = {}
        for key, raw in parser.items(section, raw=True):
            if self._set_aside(key):
                continue
            option = options.get(key)
            if option is None:
                self.problem(section, key, "unknown option")
                continue
            ok, value = self.read_key(section, key, raw, option, found)
            if ok:
                result[key] = value
        for key, option in options.items():
            if option.required is not None and (section, key) not in found.written:
                self.problem(section, key, f"missing, {option.required}")
        return result

    def read_mapping(
        self, parser: configparser.ConfigParser, section: str, found: IniValues
    ) -> dict[str, Any]:
        """A section of free keys (``MappingRule``): each key checked, each value read; problems recorded."""
        mapping: dict[str, Any] = {}
        rule = self.whitelist.mappings[section]
        for written_key, raw in parser.items(section, raw=True):
            if self._set_aside(written_key):
                continue
            key = written_key.lower() if rule.lower_keys else written_key
            reason = rule.key_problem(key)
            if reason is None and key in mapping:
                reason = "given twice (names are compared in lower case)"
            if reason is not None:
                self.problem(section, written_key, reason)
                continue
            ok, value = self.read_key(section, written_key, raw, rule.option, found)
            if ok:
                mapping[key] = value
        return mapping

    def read_key(
        self, section: str, key: str, raw: str, option: Option, found: IniValues
    ) -> tuple[bool, Any]:
        """Whether the whitelisted ``key`` is valid, and its converted value; problems recorded."""
        found.written.add((section, key))
        value = self.expand(section, key, raw, option)
        if value is None:
            return False, None
        found.texts[section, key] = value
        try:
            return True, option.convert(value)
        except v.Invalid as e:
            self.problem(section, key, str(e))
            return False, None

    # -- ${NAME} --------------------------------------------------------------

    def expand(self, section: str, key: str, raw: str, option: Option) -> str | None:
        """``raw`` with each ``${NAME}`` taken from the environment; None after a problem."""
        if "\n" in raw:
            self.problem(section, key, "expected one line; an indented line continues the value above it")
            return None
        if _malformed_reference(raw):
            shown = "" if option.secret else f", {v.got(raw)}"
            self.problem(section, key, f"malformed ${{...}}, write ${{NAME}}{shown}")
            return None
        ok = True

        def replace(match: re.Match[str]) -> str:
            nonlocal ok
            name = match[1]
            if name in option.variables:
                return match[0]
            ok = False
            if name in CID_VARIABLES and option.variables == NODE_VARIABLES:
                self.problem(section, key, f"{match[0]} is not allowed here, use ${{node}}")
            elif name in CID_VARIABLES:
                self.problem(section, key, f"{match[0]} is only allowed in topic templates and mountpoints")
            elif name in NODE_VARIABLES:
                self.problem(section, key, "${node} is only allowed in [presence] node_topic")
            elif name not in self.environ:
                self.problem(section, key, f"environment variable {name} is not set")
            else:
                ok = True
                return self.environ[name]
            return ""

        expanded = REFERENCE.sub(replace, raw)
        return expanded if ok else None

    # -- INI syntax -------------------------------------------------------------

    def parse(self, text: str) -> configparser.ConfigParser:
        """The parsed INI, read once; syntax problems are recorded and the offending lines set aside.

        configparser stops at the first duplicate section or key and at the first text before any
        section header. So one scan first reports each of those lines and sets it aside: a
        duplicate is renamed to a placeholder this reader skips, text before any header is blanked.
        """
        token = "\x00dup"
        while token in text:
            token += "\x00"
        self._token = token
        lines = io.StringIO(text).readlines()  # the same lines configparser.read_string sees
        self._scan(lines)
        parser = configparser.ConfigParser(
            interpolation=None,
            inline_comment_prefixes=_COMMENT_PREFIXES,
            strict=True,
            default_section=token + "default",  # so that [DEFAULT] is just an unknown section
        )
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string("".join(lines), source=self.source)
        except configparser.ParsingError as e:
            for lineno, _line in e.errors:  # the line itself may hold a password: not quoted
                self.problems.append(
                    f"{self.source}: line {lineno}: expected 'key = value' or a [section] header"
                )  # configparser read the rest of the file
        except configparser.Error as e:  # no other kind is known; kept as one line, not a traceback
            self.problems.append(f"{self.source}: {e.message.splitlines()[0]}")
            return configparser.ConfigParser()
        return parser

    def _scan(self, lines: list[str]) -> None:
        """Report and set aside, in file order, each line configparser would stop at.

        Lines are told apart as configparser tells them: a line indented deeper than the key
        above it continues that key's value, whatever it holds.
        """
        placeholders = 0
        sections: set[str] = set()
        keys: set[tuple[str, str]] = set()
        section: str | None = None  # the current section as configparser will name it
        written = ""  # and as the file names it
        continues = False  # whether a deeper indented line continues a value
        indent = 0
        for index, line in enumerate(lines):
            start = _comment_start(line)
            value = line[:start].strip()
            if not value:
                continue
            first = configparser.ConfigParser.NONSPACECRE.search(line)
            line_indent = first.start() if first is not None else 0
            if continues and line_indent > indent:
                continue
            indent = line_indent
            header = configparser.ConfigParser.SECTCRE.match(value)
            if header is not None:
                section = written = header["header"]
                if section in sections:
                    self.problem(written, None, f"duplicate section (line {index + 1})")
                    placeholders += 1
                    section = f"{self._token}{placeholders}"
                    lines[index] = _replace_line(line, f"[{section}]")
                sections.add(section)
                continues = False
            elif section is None:
                self.problems.append(
                    f"{self.source}: line {index + 1}: text before the first [section] header"
                )
                lines[index] = "\n"
            elif (option := configparser.ConfigParser.OPTCRE.match(value)) is not None:
                key = option["option"].rstrip()
                if (section, key) in keys:
                    if key:  # an empty key is reported as unparsable by configparser
                        self.problem(written, key, f"duplicate option (line {index + 1})")
                    placeholders += 1
                    key = f"{self._token}{placeholders}"
                    lines[index] = _replace_line(line, f"{key} =")
                keys.add((section, key))
                continues = bool(key)

    def _set_aside(self, name: str) -> bool:
        """Whether a section or key name is one reported while parsing: a placeholder, or empty."""
        return name.startswith(self._token) or name == ""


def _comment_start(line: str) -> int | None:
    """Where ``line``'s comment starts, found as the configparser of Python 3.11 finds it, or None.

    configparser looks at the first ``;`` and the first ``#`` together, then at the second of
    each, and so on; it stops at the first round where one starts the line or follows whitespace.
    """
    found = dict.fromkeys(_COMMENT_PREFIXES, -1)
    while found:
        found = {prefix: at for prefix, start in found.items() if (at := line.find(prefix, start + 1)) != -1}
        starts = [at for at in found.values() if at == 0 or line[at - 1].isspace()]
        if starts:
            return min(starts)
    return None


def _malformed_reference(raw: str) -> bool:
    """Whether ``raw`` holds a ``${`` that does not open a well-formed ``${NAME}``."""
    rest = REFERENCE.sub(lambda m: "_" if _ENV_NAME.fullmatch(m[1]) else "${", raw)
    return "${" in rest


def _replace_line(line: str, replacement: str) -> str:
    """``replacement`` with ``line``'s indentation and line end, so the INI structure stays the same."""
    indent = line[: len(line) - len(line.lstrip())]
    if "\n" in indent:  # a line of only whitespace; not expected here
        indent = ""
    return indent + replacement + ("\n" if line.endswith("\n") else "")
