"""The control messages gateway members exchange over the broker: topics and hostile-input checks.

Everything here arrives from the broker, so from whoever may publish there: a body that is not
JSON, not an object, of the wrong types or too large is logged (clipped) and ignored, never raised.
"""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.logger import Logger

from ocppgw.core.peertext import clip
from ocppgw.core.topics import cid_problem, has_cid

TAKEOVER = "gateway/cluster/takeover"
REQUEST = "gateway/cluster/request"
REPLY = "gateway/cluster/reply/"  # + the asking member's name
MAX_CONTROL_BYTES = 64 * 1024  # a claim, a request or a node state
MAX_REPLY_BYTES = 4 * 1024 * 1024  # one part of a reply (parts are about 256 KB)
MAX_NAME_BYTES = 256
MAX_CONTROL_TOPIC = 1024  # characters of a topic named in a control message

_log = Logger()


def control_prefix(mountpoint: str) -> str:
    """What control topics start with: the gateway mountpoint, unless it is per charge point."""
    return "" if has_cid(mountpoint) else mountpoint


def decode(topic: str, payload: bytes, limit: int = MAX_CONTROL_BYTES) -> dict[str, Any] | None:
    """The JSON object of a control message, or None (logged) when it is not one."""
    if len(payload) > limit:
        _log.warn(
            "ignored a control message on {topic}: {size} bytes, over {limit}",
            topic=clip(topic, 200),
            size=len(payload),
            limit=limit,
        )
        return None
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        _log.warn(
            "ignored a control message on {topic}: not a JSON object: {payload}",
            topic=clip(topic, 200),
            payload=clip(payload.decode("utf-8", "replace"), 120),
        )
        return None
    return body


def name(value: Any) -> str | None:
    """A member name as it may appear in a topic level, or None."""
    if not isinstance(value, str) or len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return None
    return value if cid_problem(value) is None and value.strip() == value else None


def number(value: Any) -> float | None:
    """A finite JSON number (not a boolean), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def ignored(topic: str, why: str) -> None:
    """Log a control message that is JSON but not what it should be."""
    _log.warn("ignored a control message on {topic}: {why}", topic=clip(topic, 200), why=why)
