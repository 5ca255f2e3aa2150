"""Request/reply between gateway members over the broker (``clients``, ``kick``, ``status``).

A request goes to every member on ``<M>gateway/cluster/request``; each other member answers on
``<M>gateway/cluster/reply/<asking member>``. The asker waits for a reply from every member it
believes online, or ``timeout`` seconds, and gets what arrived (``Gathered``): a member that did not
answer in time is listed in ``missing``. With no membership known (``[presence] enable = false``)
the asker waits the whole timeout.

A list result goes in parts of at most ``PART_BYTES`` (``"part"``, ``"parts"``), so a member with
many charge points stays under a broker's message limit (NATS: 1 MB by default); the asker joins
them and counts the member as answered once every part arrived.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ocppgw.core.cluster_wire import MAX_REPLY_BYTES, REPLY, REQUEST, decode, encode, ignored, name
from ocppgw.core.peertext import clip
from ocppgw.core.ports import IBrokerLink
from ocppgw.core.timers import cancel

CONTROL_QOS = 1  # every control publish's; subscriptions: topics.control_subscription_qos
REQUEST_TIMEOUT = 1.0
MAX_ID_LENGTH = 128
PART_BYTES = 256 * 1024
MAX_PARTS = 4096

Handler = Callable[[dict[str, Any]], Any]  # args -> a JSON-serialisable result


@dataclass(frozen=True)
class Reply:
    """One member's answer: ``result``, or ``error`` when it could not answer the op."""

    member: str
    node: str
    result: Any = None
    error: str | None = None


@dataclass
class Gathered:
    """The replies to one request, by member, and the members expected that did not answer."""

    replies: dict[str, Reply] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    deferred: Deferred[Gathered]
    expected: set[str] | None
    gathered: Gathered
    timer: IDelayedCall | None = None
    parts: dict[str, dict[int, list[Any]]] = field(default_factory=dict)  # member -> part -> items


class Requests:
    """Asks the other members and answers their requests with the handlers given to ``serve``."""

    _log = Logger()

    def __init__(
        self,
        link: IBrokerLink,
        clock: IReactorTime,
        member: str,
        node: str,
        prefix: str,
        expected: Callable[[], set[str] | None],
        timeout: float = REQUEST_TIMEOUT,
        subscribe_qos: int = CONTROL_QOS,
    ) -> None:
        self._link, self._clock = link, clock
        self._member, self._node = member, node
        self._prefix = prefix
        self._expected = expected
        self.timeout = timeout
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[str, _Pending] = {}
        self._serial = 0
        self._stamp = secrets.token_hex(4)  # request ids differ across runs of one member
        self.request_topic = prefix + REQUEST
        self.reply_topic = prefix + REPLY + member
        link.subscribe(self.request_topic, subscribe_qos, self._request_received)
        link.subscribe(self.reply_topic, subscribe_qos, self._reply_received)

    def serve(self, op: str, handler: Handler) -> None:
        """Answer requests for ``op`` with ``handler(args)``."""
        self._handlers[op] = handler

    def ask(self, op: str, args: dict[str, Any] | None = None) -> Deferred[Gathered]:
        """Send ``op`` to every other member; fires with their replies (never fails)."""
        self._serial += 1
        request_id = f"{self._stamp}-{self._serial}"
        expected = self._expected()
        pending = _Pending(Deferred(), None if expected is None else set(expected), Gathered())
        self._pending[request_id] = pending
        body = {"id": request_id, "from": self._member, "op": op, "args": args or {}}
        self._link.publish(self.request_topic, encode(body), CONTROL_QOS)
        if pending.expected is not None and not pending.expected:
            self._finish(request_id)
        else:
            pending.timer = self._clock.callLater(self.timeout, self._finish, request_id)
        return pending.deferred

    def member_gone(self, member: str) -> None:
        """``member`` went offline: no request waits for it any longer."""
        for request_id, pending in list(self._pending.items()):
            if pending.expected is not None and member in pending.expected:
                pending.expected.discard(member)
                self._check(request_id)

    def stop(self) -> None:
        """Every waiting request gets what it has now."""
        for request_id in list(self._pending):
            self._finish(request_id)

    # -- the broker's side -----------------------------------------------

    def _request_received(self, topic: str, payload: bytes) -> None:
        body = decode(topic, payload)
        if body is None:
            return
        asker, request_id, op, args = name(body.get("from")), body.get("id"), body.get("op"), body.get("args")
        if asker is None or not isinstance(request_id, str) or len(request_id) > MAX_ID_LENGTH:
            ignored(topic, "a request needs a member name in 'from' and a string 'id'")
            return
        if asker == self._member:
            return
        if args is None:
            args = {}
        reply: dict[str, Any] = {"id": request_id, "member": self._member, "node": self._node}
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None or not isinstance(args, dict):
            reply["error"] = f"unknown op {clip(str(op), 40)!r}" if handler is None else "args: not an object"
        else:
            try:
                reply["result"] = handler(args)
            except Exception:
                self._log.failure("cluster request {op} from {asker} failed", op=op, asker=asker)
                reply["error"] = "failed"
        topic = self._prefix + REPLY + asker
        result = reply.get("result")
        if not isinstance(result, list):
            self._link.publish(topic, encode(reply), CONTROL_QOS)
            return
        parts = _parts(result)
        for index, items in enumerate(parts):
            body = {**reply, "result": items, "part": index, "parts": len(parts)}
            self._link.publish(topic, encode(body), CONTROL_QOS)

    def _reply_received(self, topic: str, payload: bytes) -> None:
        body = decode(topic, payload, MAX_REPLY_BYTES)
        if body is None:
            return
        request_id, member, node = body.get("id"), name(body.get("member")), name(body.get("node"))
        if not isinstance(request_id, str) or member is None or node is None:
            ignored(topic, "a reply needs 'id', 'member' and 'node' strings")
            return
        pending = self._pending.get(request_id)
        if pending is None:
            self._log.debug(
                "late or unknown cluster reply {id} from {member}", id=clip(request_id, 40), member=member
            )
            return
        error, result = body.get("error"), body.get("result")
        part, parts = body.get("part"), body.get("parts")
        if part is not None or parts is not None:
            whole = _count(parts) and _count(part, parts) and parts <= MAX_PARTS
            if not whole or not isinstance(result, list):
                ignored(topic, "a part of a reply needs 'part' < 'parts' and a list 'result'")
                return
            received = pending.parts.setdefault(member, {})
            received[part] = result
            if len(received) < parts:
                return
            result = [item for index in sorted(received) for item in received[index]]
            del pending.parts[member]
        pending.gathered.replies[member] = Reply(
            member, node, result, clip(error, 200) if isinstance(error, str) else None
        )
        self._check(request_id)

    def _check(self, request_id: str) -> None:
        pending = self._pending[request_id]
        if pending.expected is not None and pending.expected <= pending.gathered.replies.keys():
            self._finish(request_id)

    def _finish(self, request_id: str) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return
        cancel(pending.timer)
        gathered = pending.gathered
        gathered.missing = sorted((pending.expected or set()) - gathered.replies.keys())
        pending.deferred.callback(gathered)


def _parts(items: list[Any]) -> list[list[Any]]:
    """``items`` in consecutive parts of about ``PART_BYTES`` of JSON each; one empty part for none."""
    parts: list[list[Any]] = [[]]
    size = 0
    for item in items:
        length = len(encode(item)) if isinstance(item, dict | list) else 16
        if parts[-1] and size + length > PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(item)
        size += length + 1
    return parts


def _count(value: Any, below: Any = None) -> bool:
    """Whether ``value`` is a whole number >= 0 (and < ``below`` when given); >= 1 without ``below``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return False
    return value >= 1 if below is None else 0 <= value < below
