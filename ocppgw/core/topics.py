"""MQTT topic templates and the charge point ids that may be put into them.

The rules live here, once: which template variables exist, what makes a template valid
(checked by ``ocppgw.config`` at load time), how a template is rendered (per charge point).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_CID_BYTES = 256
MAX_TOPIC_BYTES = 65535  # the MQTT limit on a topic name or filter

CID_VARIABLES = frozenset({"cid", "clientid"})  # filled in per charge point
NODE_VARIABLES = frozenset({"node"})  # filled in with the node name ([presence] node_topic only)
REFERENCE = re.compile(r"\$\{([^{}]*)\}")  # any ${...}: a variable here, or an environment variable in gw.ini

BROKERS = ("generic", "rabbitmq", "nats")
"""``[mqtt] broker``: generic follows MQTT 3.1.1's topic rules (Mosquitto, EMQX, HiveMQ ...)."""

_UNSAFE = {"generic": "", "rabbitmq": ".*", "nats": ". "}
# RabbitMQ 3.x maps topics onto AMQP routing keys: "." becomes a level separator and "*" comes
# back as "+". NATS 2.9 maps them onto subjects and closes the connection on a "." or " " in a
# topic (a will's included) and refuses a filter holding one (SUBACK 0x80). Measured, README "Brokers".


def unsafe_chars(broker: str) -> str:
    """The characters ``broker`` cannot carry in a topic as they are."""
    return _UNSAFE[broker]


def unsafe_problem(text: str, broker: str) -> str | None:
    """Why ``text`` (a topic, template or name in one) cannot reach ``broker``, or None."""
    found = sorted({char for char in text if char in _UNSAFE[broker]})
    if not found:
        return None
    shown = " and ".join(repr(char) for char in found)
    return f"must not contain {shown}: [mqtt] broker = {broker} cannot carry it in a topic, got {text!r}"


def retained_on_wildcards(broker: str) -> bool:
    """Whether a wildcard subscription receives the retained messages it matches (not on
    RabbitMQ 3.x: only a subscription to the exact topic does)."""
    return broker != "rabbitmq"


def control_subscription_qos(broker: str) -> int:
    """The QoS of the members' subscriptions to their control topics (``gateway/cluster/...``, the
    node states): 1, except on NATS. There a QoS 1 subscription is a replicated JetStream consumer,
    which handed members' takeover claims over 5-500 ms late and, after heavy QoS 1 traffic, did not
    hand some over within 10 s (bench/README.md, issue 12); a QoS 0 subscription gets a message from
    NATS's core routing as soon as the publisher's server reads it. The link's session is clean, so a
    QoS 1 subscription would keep nothing across a reconnect anyway; the members still publish at
    QoS 1 (acknowledged by the broker, sent again after a reconnect)."""
    return 0 if broker == "nats" else 1


_VARIABLE = re.compile(r"\$\{(" + "|".join(sorted(CID_VARIABLES | NODE_VARIABLES)) + r")\}")


_PIECES_KEPT = 256  # templates come from the config: a handful; the bound is for safety only
_pieces: dict[str, tuple[str, ...]] = {}


def _split(template: str) -> tuple[str, ...]:
    """``template`` as literal text at even places and variable names at odd ones, split once."""
    pieces = _pieces.get(template)
    if pieces is None:
        if len(_pieces) >= _PIECES_KEPT:
            _pieces.clear()
        pieces = _pieces[template] = tuple(_VARIABLE.split(template))
    return pieces


def render(template: str, cid: str = "", node: str = "") -> str:
    """Fill ``${cid}`` (alias ``${clientid}``) and ``${node}`` into a template."""
    if "${" not in template:
        return template
    pieces = _split(template)
    if len(pieces) == 3:  # one variable, as in every default template
        return pieces[0] + (node if pieces[1] in NODE_VARIABLES else cid) + pieces[2]
    filled = list(pieces)
    for i in range(1, len(filled), 2):
        filled[i] = node if filled[i] in NODE_VARIABLES else cid
    return "".join(filled)


def has_cid(template: str) -> bool:
    """Whether ``template`` names a topic per charge point: it holds ``${cid}`` or ``${clientid}``."""
    return any(f"${{{name}}}" in template for name in CID_VARIABLES)


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    """Why a template cannot be used; ``quote`` says whether a message should show the template."""

    reason: str
    quote: bool = True


class _Unfillable(Exception):
    """A template holds a variable that is unknown here, or a broken ``${``."""

    def __init__(self, problem: TemplateProblem) -> None:
        super().__init__(problem.reason)
        self.problem = problem


def _fill(template: str, variables: frozenset[str]) -> str:
    """``template`` with each of ``variables`` replaced by a stand-in level, so its topic can be checked."""

    def replace(match: re.Match[str]) -> str:
        if match[1] in variables:
            return "x"
        raise _Unfillable(TemplateProblem(f"unknown template variable {match[0]}", quote=False))

    filled = REFERENCE.sub(replace, template)
    if "${" in filled:
        raise _Unfillable(TemplateProblem("malformed template variable"))
    return filled


def template_problem(
    template: str,
    variables: frozenset[str] = frozenset(),
    *,
    is_filter: bool = False,
    needs_cid: bool = False,
) -> TemplateProblem | None:
    """Why ``template`` cannot name a topic (a filter with ``is_filter``) once ``variables`` are in.

    ``needs_cid``: the template must differ per charge point. None when the template is valid.
    """
    if not template:
        return TemplateProblem("must not be empty", quote=False)
    try:
        filled = _fill(template, variables)
    except _Unfillable as e:
        return e.problem
    if "\x00" in filled:
        return TemplateProblem("must not contain a NUL character")
    if len(filled.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        return TemplateProblem(f"is longer than the {MAX_TOPIC_BYTES} bytes MQTT allows", quote=False)
    if is_filter:
        if filter_problem(filled) is not None:
            return TemplateProblem(
                "expected an MQTT topic filter where + is a whole level and # only the whole last level"
            )
    elif is_wildcard(filled):
        return TemplateProblem("must not contain the MQTT wildcards + or #")
    if needs_cid and not has_cid(template):
        return TemplateProblem("must contain ${cid}")
    return None


def mountpoint_problem(mountpoint: str) -> TemplateProblem | None:
    """Why ``mountpoint`` cannot prefix topics, or None; it may be empty or hold ``${cid}``, not wildcards."""
    try:
        filled = _fill(mountpoint, CID_VARIABLES)
    except _Unfillable as e:
        return e.problem
    if is_wildcard(filled):
        return TemplateProblem("must not contain the MQTT wildcards + or #")
    if "\x00" in filled:
        return TemplateProblem("must not contain a NUL character")
    return None


def cid_problem(cid: str, unsafe: str = "") -> str | None:
    """Why a charge point id cannot name MQTT topics, or None when it can; ``unsafe``: characters the
    broker cannot carry (``unsafe_chars``)."""
    if not cid:
        return "clientid_cannot_be_empty"
    if len(cid.encode("utf-8", "surrogatepass")) > MAX_CID_BYTES:
        return "clientid_too_long"
    for char in cid:
        if char in "/+#" or char in unsafe:
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
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        return f"MQTT topic is longer than {MAX_TOPIC_BYTES} bytes"
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


def filter_levels(topic_filter: str) -> tuple[str, ...]:
    """A wildcard filter split into levels once, for ``levels_match``."""
    return tuple(topic_filter.split("/"))


def levels_match(levels: tuple[str, ...], topic: str, parts: list[str]) -> bool:
    """Whether the filter of ``levels`` matches ``topic`` (``parts``: it split at ``/``), as MQTT
    3.1.1 section 4.7 says: ``+`` is one whole level, ``#`` the parent and any levels below, and a
    filter that starts with a wildcard matches no topic that starts with ``$``. paho's
    ``topic_matches_sub`` does the same but builds a matcher tree per call (~5 us; every message met
    every wildcard filter of the link); ``tests/test_core_topics.py`` checks the two agree."""
    if topic[:1] == "$" and levels[0] in ("+", "#"):
        return False
    count = len(parts)
    for index, level in enumerate(levels):
        if level == "#":
            return True
        if index >= count or (level != "+" and level != parts[index]):
            return False
    return count == len(levels)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """``levels_match`` for a filter and topic not split yet."""
    return levels_match(filter_levels(topic_filter), topic, topic.split("/"))


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """The topics of one charge point, rendered once when it connects; or, unrendered, the config's
    templates for them."""

    call: str
    reply: str
    error: str
    dnstream: str
    presence: str
    overrides: dict[str, str]

    def for_call(self, action: str) -> str:
        """The topic a Call of this action goes to."""
        return self.overrides.get(action, self.call)

    def rendered(self, mountpoint: str, cid: str) -> TopicPlan:
        """This plan of templates filled in for charge point ``cid`` under ``mountpoint``."""
        prefix = render(mountpoint, cid)
        topics = (self.call, self.reply, self.error, self.dnstream, self.presence)
        return TopicPlan(
            *(prefix + render(t, cid) for t in topics),
            {action: prefix + render(t, cid) for action, t in self.overrides.items()},
        )


def node_topic(mountpoint: str, template: str, node: str) -> str:
    """The node's presence topic; a mountpoint per charge point (``${cid}``) means nothing for a node."""
    return ("" if has_cid(mountpoint) else mountpoint) + render(template, node=node)
