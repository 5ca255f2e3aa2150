"""MQTT topic templates and the charge point ids that may be put into them."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_CID_BYTES = 256

_VARIABLE = re.compile(r"\$\{(cid|clientid|node)\}")


def render(template: str, cid: str = "", node: str = "") -> str:
    """Fill ``${cid}`` (alias ``${clientid}``) and ``${node}`` into a template."""
    if "${" not in template:
        return template
    return _VARIABLE.sub(lambda m: node if m.group(1) == "node" else cid, template)


def cid_problem(cid: str) -> str | None:
    """Why a charge point id cannot name MQTT topics, or None when it can."""
    if not cid:
        return "clientid_cannot_be_empty"
    if len(cid.encode("utf-8", "surrogatepass")) > MAX_CID_BYTES:
        return "clientid_too_long"
    for char in cid:
        if char in "/+#":
            return "unsupported_clientid"
        if unicodedata.category(char) in ("Cc", "Cs"):
            return "unsupported_clientid"
    return None


def topic_problem(topic: str) -> str | None:
    """Why ``topic`` cannot be published to, or None when it can."""
    if not topic:
        return "MQTT topic must not be empty"
    if "+" in topic or "#" in topic:
        return f"MQTT topic must not contain wildcards, got {topic!r}"
    if len(topic.encode("utf-8")) > 65535:
        return "MQTT topic is longer than 65535 bytes"
    return None


def is_wildcard(topic_filter: str) -> bool:
    """Whether a subscription filter holds ``+`` or ``#``."""
    return "+" in topic_filter or "#" in topic_filter


def filter_problem(topic_filter: str) -> str | None:
    """Why ``topic_filter`` cannot be subscribed to, or None when it can."""
    if not topic_filter:
        return "MQTT topic filter must not be empty"
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and (level != "#" or index != len(levels) - 1)):
            return (
                f"MQTT topic filter must use + as a whole level and # only as the whole last level, "
                f"got {topic_filter!r}"
            )
    return None


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """The topics of one charge point, rendered once when it connects."""

    call: str
    reply: str
    error: str
    dnstream: str
    presence: str
    overrides: dict[str, str]

    def for_call(self, action: str) -> str:
        """The topic a Call of this action goes to."""
        return self.overrides.get(action, self.call)
