"""Placeholders in authentication settings: ``${clientid}`` and friends, filled in per handshake.

The reference gateway renders a placeholder with no value (no username, no certificate) as the
empty string. The password stays bytes (Basic auth may carry non-UTF-8): ``render_bytes`` keeps it
as sent, ``render_text`` says None when a value is not UTF-8 text (a JSON body cannot carry it).
Any other ``${NAME}`` was an environment variable, substituted when gw.ini was read.
"""

from __future__ import annotations

import re

from ocppgw.core.ports import Credentials

PLACEHOLDERS = ("clientid", "username", "password", "peerhost", "cert_common_name", "cert_subject")
PLACEHOLDER = re.compile(r"\$\{(" + "|".join(PLACEHOLDERS) + r")\}")
_QUOTED_IN_SQL = re.compile(r'"?\$\{(' + "|".join(PLACEHOLDERS) + r')\}"?')


def peer_host(peer: str) -> str:
    """The host part of ``host:port`` or ``[host]:port``."""
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def value(name: str, credentials: Credentials) -> bytes:
    """One placeholder's value as bytes; empty when the charge point did not present it."""
    if name == "password":
        return credentials.password or b""
    text = {
        "clientid": credentials.cid,
        "username": credentials.username,
        "peerhost": peer_host(credentials.peer),
        "cert_common_name": credentials.certificate_cn,
        "cert_subject": credentials.certificate_dn,
    }[name]
    return (text or "").encode("utf-8", "surrogateescape")


def render_bytes(template: str, credentials: Credentials) -> bytes:
    """``template`` with every placeholder filled in, as bytes."""
    parts = PLACEHOLDER.split(template)
    # split() alternates literal text and placeholder names
    return b"".join(
        value(part, credentials) if index % 2 else part.encode("utf-8") for index, part in enumerate(parts)
    )


def render_text(template: str, credentials: Credentials) -> str | None:
    """``template`` filled in as text, or None when a value is not valid UTF-8."""
    try:
        return render_bytes(template, credentials).decode("utf-8")
    except UnicodeDecodeError:
        return None


def sql_parameters(query: str, marker: str) -> tuple[str, tuple[str, ...]]:
    """``query`` with each placeholder (bare or in double quotes) replaced by the driver's ``marker``
    (``%s``), and the placeholder names in order: values are bound as parameters, never spliced in."""
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return marker

    literal = query.replace("%", "%%") if marker == "%s" else query
    return _QUOTED_IN_SQL.sub(replace, literal), tuple(names)
