"""Converters from one gw.ini value (text, ``${NAME}`` already substituted) to its typed value.

A converter returns the value or raises ``Invalid`` whose message is the reason part of the
problem line; the reader adds the file, section and key. ``parse_duration`` and ``parse_bind``
are also used outside the file, so they raise ``ValueError`` instead.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocppgw.core import topics

CHECKING_MODES = ("all", "upstream_only", "dnstream_only", "disable")
NETWORK_LOOPS = ("reactor", "thread")
TLS_VERSIONS = ("tlsv1.3", "tlsv1.2", "tlsv1.1", "tlsv1")  # newest first
VERIFY_MODES = ("verify_none", "verify_peer")
CLIENT_CERT_IDENTITIES = ("none", "cn")

Converter = Callable[[str], Any]  # raises Invalid


class Invalid(Exception):
    """A value is wrong; the message is the reason part of the problem line."""


@dataclass(frozen=True)
class Option:
    """How one key is read: its converter, the template variables it may hold, whether it is secret.

    ``required``, when set, is what a missing key's problem line says is expected.
    """

    convert: Converter
    variables: frozenset[str] = frozenset()
    secret: bool = False
    required: str | None = None


@dataclass(frozen=True)
class MappingRule:
    """A section of free keys, one line per field (``[upstream.topic_override_mapping]``,
    ``[authentication.headers]``): ``key_problem`` says why a key is refused (None: accepted) and
    returns it as stored; ``option`` reads every value."""

    key_problem: Callable[[str], str | None]
    option: Option
    lower_keys: bool = False  # keys compared in lower case (HTTP header names)


def got(value: str) -> str:
    """``got '<value>'``, shortened so that one problem stays one readable line."""
    if len(value) > 80:
        value = value[:77] + "..."
    return f"got {value!r}"


def seconds(value: float) -> str:
    """A duration as a problem line shows it: ``10s``, ``0.5s``."""
    return f"{value:g}s"


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
_HOST_NAME = re.compile(r"[A-Za-z0-9_.-]+")


# -- numbers ----------------------------------------------------------------


def integer(value: str, low: int | None = None, high: int | None = None) -> int:
    """A decimal integer within ``low``..``high`` (either may be open)."""
    if not _INTEGER.fullmatch(value):
        raise Invalid(f"expected an integer, {got(value)}")
    try:
        number = int(value)
    except ValueError:  # more digits than int() accepts
        number = None
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        if high is None:
            raise Invalid(f"expected an integer >= {low}, {got(value)}")
        raise Invalid(f"expected an integer from {low} to {high}, {got(value)}")
    return number


def int_min(low: int) -> Callable[[str], int]:
    """A converter of integers from ``low`` up."""
    return lambda value: integer(value, low)


def int_range(low: int, high: int) -> Callable[[str], int]:
    """A converter of integers from ``low`` to ``high``."""
    return lambda value: integer(value, low, high)


def workers(value: str) -> int:
    """``[gateway] workers``: a count of processes from 1, or ``auto`` for one per CPU."""
    if value == "auto":
        return os.cpu_count() or 1
    try:
        return integer(value, 1, 1024)
    except Invalid:
        raise Invalid(f"expected auto or an integer from 1 to 1024, {got(value)}") from None


def qos(value: str) -> int:
    """An MQTT QoS: 0, 1 or 2."""
    if value not in ("0", "1", "2"):
        raise Invalid(f"expected 0, 1 or 2, {got(value)}")
    return int(value)


def port(value: str) -> int:
    """A TCP port to connect to: 1 to 65535."""
    return integer(value, 1, 65535)


def parse_duration(value: str) -> float:
    """Seconds in ``500ms``, ``30s``, ``5m``, ``1h`` or a bare number of seconds such as ``2.5``.

    Raises ``ValueError`` with the reason when ``value`` is none of these.
    """
    match = _DURATION.fullmatch(value)
    result = math.inf
    if match is not None:
        number = float(match["number"])
        unit = match["unit"]
        result = number / 1000.0 if unit == "ms" else number * _SECONDS_PER_UNIT[unit]
    if not math.isfinite(result):
        raise ValueError(f"{_DURATION_EXPECTED}, {got(value)}")
    return result


def duration(value: str) -> float:
    """A duration in seconds, 0 allowed."""
    try:
        return parse_duration(value)
    except ValueError as e:
        raise Invalid(str(e)) from None


def duration_positive(value: str) -> float:
    """A duration in seconds, greater than 0."""
    result = duration(value)
    if result <= 0:
        raise Invalid(f"must be greater than 0, {got(value)}")
    return result


def size(value: str) -> int:
    """A positive number of bytes: ``65536``, ``64KB`` or ``1MB``."""
    match = _SIZE.fullmatch(value)
    result = None
    if match is not None:
        unit = match["unit"].upper() if match["unit"] else None
        try:
            result = int(match["number"]) * _BYTES_PER_UNIT[unit]
        except ValueError:  # more digits than int() accepts
            pass
    if result is None:
        raise Invalid(f"expected a size in bytes such as 65536, 64KB or 1MB, {got(value)}")
    if result <= 0:
        raise Invalid(f"must be greater than 0, {got(value)}")
    return result


def count_or_infinity(value: str) -> int | None:
    """A positive integer, or ``infinity`` (None): no limit."""
    if value.lower() == "infinity":
        return None
    return integer(value, 1)


def rate_or_infinity(value: str) -> float | None:
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
        raise Invalid(f"expected a number of connections per second > 0 or infinity, {got(value)}")
    return rate


# -- words and text -----------------------------------------------------------


def boolean(value: str) -> bool:
    """``true``/``yes``/``on``/``1`` or ``false``/``no``/``off``/``0``, in any case."""
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise Invalid(f"expected true or false, {got(value)}") from None


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A converter accepting one of ``choices``, in any case, returned in lower case."""

    def convert(value: str) -> str:
        if value.lower() not in choices:
            raise Invalid(f"expected one of {', '.join(choices)}, {got(value)}")
        return value.lower()

    return convert


def text(value: str) -> str:
    """Any text, kept as written."""
    return value


def optional_text(value: str) -> str | None:
    """Any text; empty means unset (None)."""
    return value or None


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110): header names, subprotocols
SUBPROTOCOLS = ("ocpp1.6",)  # what the gateway speaks


def subprotocols(value: str) -> tuple[str, ...]:
    """A comma-separated list of WebSocket subprotocols the gateway speaks, in order of preference."""
    names = tuple(name.strip() for name in value.split(","))
    for name in names:
        if name not in SUBPROTOCOLS:
            raise Invalid(f"supported: {', '.join(SUBPROTOCOLS)} (case-sensitive), {got(name)}")
    if len(set(names)) != len(names):
        raise Invalid(f"lists a subprotocol twice, {got(value)}")
    return names


def header_name(value: str) -> str:
    """An HTTP header name (compared case-insensitively, kept in lower case); empty means none."""
    if value and not _TOKEN.fullmatch(value):
        raise Invalid(f"expected an HTTP header name such as X-Forwarded-For, {got(value)}")
    return value.lower()


def networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A comma-separated list of addresses or CIDR networks (``10.0.0.0/8, ::1``); empty: none."""
    found = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            found.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise Invalid(f"expected addresses or networks such as 10.0.0.0/8, {got(item)}") from None
    return tuple(found)


def host(value: str) -> str:
    """A host name or address to connect to."""
    if not value:
        raise Invalid("must not be empty")
    if any(char.isspace() for char in value) or "\x00" in value:
        raise Invalid(f"expected a host name or address, {got(value)}")
    return value


def node_name(value: str) -> str:
    """The node's name, one topic level; empty means the host name, filled in later."""
    if any(char in "/+#\x00" or char.isspace() for char in value):
        raise Invalid(f"must not contain /, +, # or whitespace, {got(value)}")
    return value


def url_path(value: str) -> str:
    """The URL path of a listener: ``/`` or ``/a/b``."""
    if not value.startswith("/"):
        raise Invalid(f"must start with /, {got(value)}")
    if value != "/" and value.endswith("/"):
        raise Invalid(f"must not end with /, {got(value)}")
    if any(char in "?#\x00" or char.isspace() for char in value):
        raise Invalid(f"must not contain whitespace, ? or #, {got(value)}")
    return value


# -- topics: the rules are ocppgw.core.topics' ------------------------------------


def _raise(problem: topics.TemplateProblem | None, value: str) -> None:
    if problem is not None:
        raise Invalid(f"{problem.reason}, {got(value)}" if problem.quote else problem.reason)


def mountpoint(value: str) -> str:
    """A topic prefix; may be empty and may hold ``${cid}``, never a wildcard."""
    _raise(topics.mountpoint_problem(value), value)
    return value


def topic_template(
    *, variables: frozenset[str] = frozenset(), is_filter: bool = False, needs_cid: bool = False
) -> Callable[[str], str]:
    """A converter of topic templates: a valid MQTT topic (or filter) once ``variables`` are in."""

    def convert(value: str) -> str:
        _raise(topics.template_problem(value, variables, is_filter=is_filter, needs_cid=needs_cid), value)
        return value

    return convert


# -- network and TLS ------------------------------------------------------------


def parse_bind(value: str) -> tuple[str, int]:
    """``(host, port)`` from ``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``; a bare port means 0.0.0.0.

    Raises ``ValueError`` with the reason when ``value`` is none of these.
    """
    forms = "expected PORT, HOST:PORT or [IPv6]:PORT"
    if value.startswith("["):
        address, bracket, port_text = value[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise ValueError(f"{forms}, {got(value)}")
        port_text = port_text[1:]
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise ValueError(f"expected an IPv6 address inside [ ], {got(value)}") from None
    elif ":" in value:
        address, _, port_text = value.rpartition(":")
        if ":" in address:
            raise ValueError(f"write an IPv6 address in brackets, such as [::1]:33033, {got(value)}")
        if not _HOST_NAME.fullmatch(address):
            raise ValueError(f"{forms}, {got(value)}")
    else:
        address, port_text = "0.0.0.0", value
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise ValueError(f"{forms} with a port from 0 to 65535, {got(value)}")
    return address, int(port_text)


def bind(value: str) -> tuple[str, int]:
    """The address a listener binds: see ``parse_bind``."""
    try:
        return parse_bind(value)
    except ValueError as e:
        raise Invalid(str(e)) from None


def normal_host(address: str) -> str:
    """One spelling per host, so that two binds of the same address compare equal."""
    try:
        return ipaddress.ip_address(address).compressed
    except ValueError:
        return address.lower()


def tls_versions(value: str) -> tuple[str, ...]:
    """A comma-separated list of consecutive TLS versions, newest first in the result."""
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    if not names:
        raise Invalid(f"expected a list such as tlsv1.3,tlsv1.2, {got(value)}")
    unknown = [name for name in names if name not in TLS_VERSIONS]
    if unknown:
        raise Invalid(f"expected versions among {', '.join(TLS_VERSIONS)}, {got(value)}")
    indexes = sorted({TLS_VERSIONS.index(name) for name in names})
    missing = [TLS_VERSIONS[i] for i in range(indexes[0], indexes[-1] + 1) if i not in indexes]
    if missing:
        raise Invalid(f"expected consecutive versions, {', '.join(missing)} missing, {got(value)}")
    return tuple(TLS_VERSIONS[i] for i in indexes)


def ciphers(value: str) -> str | None:
    """An OpenSSL cipher string; empty means OpenSSL's default (None)."""
    if any(char.isspace() for char in value.strip()) or "\x00" in value:
        raise Invalid(f"expected an OpenSSL cipher string without spaces, {got(value)}")
    return value.strip() or None


# -- paths: relative to the INI file's directory ----------------------------------


def directory_in(base_dir: Path) -> Callable[[str], Path | None]:
    """A converter of an existing directory, relative to ``base_dir``; empty means None."""

    def convert(value: str) -> Path | None:
        if not value:
            return None
        path = base_dir / value
        try:
            is_dir = path.is_dir()
        except (OSError, ValueError):
            is_dir = False
        if not is_dir:
            shown = "" if str(path) == value else f" ({path})"
            raise Invalid(f"expected an existing directory, {got(value)}{shown}")
        return path

    return convert


def path_in(base_dir: Path) -> Callable[[str], Path]:
    """A converter of a path relative to ``base_dir`` that need not exist yet (it is made later)."""

    def convert(value: str) -> Path:
        if not value:
            raise Invalid("must not be empty")
        if "\x00" in value:
            raise Invalid("must not contain a NUL character")
        return base_dir / value

    return convert


def file_in(base_dir: Path) -> Callable[[str], Path | None]:
    """A converter of a file path relative to ``base_dir``; the file is read later (``ocppgw.tls``)."""

    def convert(value: str) -> Path | None:
        if not value:
            return None
        if "\x00" in value:
            raise Invalid("must not contain a NUL character")
        return base_dir / value

    return convert
