"""Sans-IO checks of a WebSocket upgrade request: the charge point id, the subprotocol, Basic auth,
the charge point's address behind an HTTP reverse proxy, and the answer to a refused request.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import unquote_to_bytes

from ocppgw.core.topics import cid_problem

SUBPROTOCOL = "ocpp1.6"
WEBSOCKET_VERSION = "13"  # RFC 6455; Autobahn also speaks the draft version 8 unless told


class Refusal(Exception):
    """An HTTP answer that ends the handshake."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


def cid_from_path(path: str, prefix: str, unsafe: str = "") -> str:
    """The percent-decoded charge point id after ``prefix/``; raise Refusal otherwise (also for an id
    holding a character of ``unsafe``, which the broker cannot carry in a topic)."""
    base = prefix.rstrip("/") + "/"
    if not path.startswith(base):
        raise Refusal(404, "not_found")
    raw = path[len(base) :]
    try:
        cid = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "unsupported_clientid") from None
    problem = cid_problem(cid, unsafe)
    if problem is not None:
        raise Refusal(400, problem)
    return cid


def pick_subprotocol(
    offered: Sequence[str], supported: Sequence[str] = (SUBPROTOCOL,), fail_if_none: bool = False
) -> str | None:
    """The first of ``supported`` the charge point offers; raise Refusal(400) when there is none.

    A charge point offering no subprotocol at all (many 1.6 chargers in the field) gets None, served
    as OCPP 1.6 with no ``Sec-WebSocket-Protocol`` in the 101 (RFC 6455 4.1: a client that offered
    none must fail on one), unless ``fail_if_none``. Names compare case-sensitively, as RFC 6455 says.
    """
    if not offered:
        if fail_if_none:
            raise Refusal(400, "no_subprotocol")
        return None
    for name in supported:
        if name in offered:
            return name
    raise Refusal(400, "no_supported_subprotocol")


def basic_credentials(header: str | None, identity: str = "") -> tuple[str | None, bytes | None]:
    """Username and password (bytes) from an ``Authorization: Basic`` header.

    A missing, foreign or malformed header gives (None, None): refusing is the
    authenticator's decision, not the parser's. A username may hold ``:``
    when it is the charge point's identity, so that split is tried first.
    """
    if not header:
        return None, None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None, None
    prefix = identity.encode("utf-8") + b":"
    if identity and decoded.startswith(prefix):
        return identity, decoded[len(prefix) :]
    username, sep, password = decoded.partition(b":")
    if not sep:
        return None, None
    try:
        return username.decode("utf-8"), password
    except UnicodeDecodeError:
        return None, None


_Network = IPv4Network | IPv6Network
_IP = IPv4Address | IPv6Address
_ENTRY = re.compile(
    r"\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<v6port>\d{1,5}))?|(?P<v4>[0-9.]+)(?::(?P<v4port>\d{1,5}))?"
)


def forwarded_address(peer_host: str, header: str | None, trusted: Iterable[_Network]) -> str | None:
    """The charge point's address from a reverse proxy's ``X-Forwarded-For``-style header, or None.

    The header is honoured only when ``peer_host`` (the TCP peer, or the PROXY-protocol address) is
    in ``trusted``. Each proxy appends the address it received from, so the list is walked from the
    right, skipping trusted proxies; the first untrusted entry is the charge point's. Anything left
    of it was written by the charge point and is never believed. An entry that is not an address
    (``unknown``, a name, garbage) stops the walk: the address is then the last trusted hop's, the
    one that handed over the garbage, which is what the gateway can vouch for. When every entry is
    trusted, the left-most is taken. Entries may carry a port (``1.2.3.4:5``, ``[2001:db8::1]:5``).
    None means "use the peer's own address".
    """
    networks = tuple(trusted)
    if not header or not _trusted(_ip(peer_host), networks):
        return None
    found: str | None = None
    for raw in reversed(header.split(",")):
        entry = _parse_entry(raw.strip())
        if entry is None:
            return found
        address, port = entry
        found = address.compressed if port is None else _with_port(address, port)
        if not _trusted(address, networks):
            return found
    return found


def _ip(text: str) -> _IP | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: _IP | None, networks: tuple[_Network, ...]) -> bool:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and any(address in network for network in networks)


def _parse_entry(entry: str) -> tuple[_IP, int | None] | None:
    """An address and its optional port, or None for anything else (``unknown``, names, garbage)."""
    match = _ENTRY.fullmatch(entry)
    if match is None:
        address = _ip(entry) if ":" in entry else None  # a bare IPv6 address
        return None if address is None else (address, None)
    address = _ip(match["v6"] or match["v4"])
    port = match["v6port"] or match["v4port"]
    if address is None or (match["v6"] is not None) != (address.version == 6):
        return None
    return address, None if port is None else int(port)


def _with_port(address: _IP, port: int) -> str:
    """``host:port``, ``[host]:port`` for IPv6, as ``ws.transport.peer_address`` writes a peer."""
    return f"[{address.compressed}]:{port}" if address.version == 6 else f"{address}:{port}"


def host_of(address: str) -> str:
    """The host part of ``host:port`` or ``[host]:port`` as ``ws.transport.peer_address`` writes it."""
    if address.startswith("["):
        return address[1 : address.find("]")]
    return address.rpartition(":")[0] or address


_TOKEN = re.compile(r"[a-z][a-z0-9_]{0,63}")


def is_token(reason: str) -> bool:
    """Whether ``reason`` is one of the gateway's machine-readable reasons (``no_subprotocol``)."""
    return _TOKEN.fullmatch(reason) is not None


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Refused"


def refusal_label(status: int, reason: str) -> str:
    """The metric label of a refusal: the gateway's token, or the status's phrase as one."""
    return reason if is_token(reason) else _phrase(status).lower().replace(" ", "_").replace("-", "_")


def refusal_response(status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """The whole HTTP answer to a refused upgrade request, with no server name.

    The gateway's own reasons (``no_subprotocol``, ``not_authorized``) are machine-readable tokens:
    they are the status line's phrase and, as the reference gateway answers, the body. Autobahn's
    free-text reasons may quote the request, so they give way to the standard phrase and no body.
    """
    body = reason if is_token(reason) else ""
    if not body:
        reason = _phrase(status)
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{name}: {value}" for name, value in headers)]
    if body:
        lines.append("Content-Type: text/plain")
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", body]
    return "\r\n".join(lines).encode("latin-1")


def version_refused(headers: Mapping[str, str]) -> bool:
    """Whether an upgrade request names a WebSocket version other than 13 (none included).

    RFC 6455 4.4 answers those with 426 and the version the server speaks.
    """
    upgrade = headers.get("upgrade", "")
    if "websocket" not in (token.strip().lower() for token in upgrade.split(",")):
        return False
    return headers.get("sec-websocket-version", "").strip() != WEBSOCKET_VERSION


class HeadTooLarge(Exception):
    """The request head did not end within the handshake budget."""


class RequestHead:
    """Holds a connection's bytes until its HTTP request head ends, within ``limit`` bytes.

    Autobahn looks for the blank line by scanning its whole buffer again on every chunk, so a head
    that never ends costs quadratic time; here each byte is scanned once (with 3 bytes of overlap),
    and a head longer than ``limit`` raises HeadTooLarge at once. Bytes a client sends after the
    head and before the 101 (RFC 6455 says it must not) are held too, within the same budget, so
    Autobahn never parses a second request while an authenticator decides.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0  # bytes fed so far
        self.complete = False  # the head ended and was handed over
        self._chunks: list[bytes] = []
        self._tail = b""  # the last 3 bytes, for a blank line split across chunks

    def feed(self, data: bytes) -> bytes:
        """What to hand Autobahn now: the head and what followed it, once; b"" while holding."""
        start = self.size
        self.size += len(data)
        if self.complete:
            if self.size > self.limit:
                raise HeadTooLarge(self.size)
            self._chunks.append(data)
            return b""
        window = self._tail + data
        found = window.find(b"\r\n\r\n")
        if found < 0:
            if self.size > self.limit:
                raise HeadTooLarge(self.size)
            self._chunks.append(data)
            self._tail = window[-3:]
            return b""
        if start - len(self._tail) + found + 4 > self.limit:
            raise HeadTooLarge(self.size)
        self.complete = True
        self._tail = b""
        self._chunks.append(data)
        return self.release()

    def release(self) -> bytes:
        """The bytes held so far (forgotten here)."""
        held, self._chunks = b"".join(self._chunks), []
        return held
