"""Sans-IO checks of a WebSocket upgrade request: the charge point id, the subprotocol, Basic auth."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_to_bytes

from ocppgw.core.topics import cid_problem

SUBPROTOCOL = "ocpp1.6"


class Refusal(Exception):
    """An HTTP answer that ends the handshake."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


def cid_from_path(path: str, prefix: str) -> str:
    """The percent-decoded charge point id after ``prefix/``; raise Refusal otherwise."""
    base = prefix.rstrip("/") + "/"
    if not path.startswith(base):
        raise Refusal(404, "not_found")
    raw = path[len(base) :]
    try:
        cid = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "unsupported_clientid") from None
    problem = cid_problem(cid)
    if problem is not None:
        raise Refusal(400, problem)
    return cid


def pick_subprotocol(offered: list[str]) -> str:
    """``ocpp1.6`` when offered; raise Refusal(400) otherwise."""
    if not offered:
        raise Refusal(400, "no_subprotocol")
    if SUBPROTOCOL not in offered:
        raise Refusal(400, "no_supported_subprotocol")
    return SUBPROTOCOL


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
