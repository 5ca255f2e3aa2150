"""The gateway's charge points wherever they are, for the management API.

This member's answers come from its router; the other members' through cluster requests
(``ocppgw.core.cluster``), merged. The directory also answers those requests for this member, so a
member without the API (a worker) is listed by the one that runs it; and a member that holds no
charge point (a workers' master) asks the others the same way.

What other members reply is broker input: anything that is not the expected shape is left out
(logged), never passed on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from ocppgw.api.clients import client_object
from ocppgw.core.cluster_requests import Gathered
from ocppgw.core.peertext import clip

if TYPE_CHECKING:
    from ocppgw.service import GatewayService

MAX_REMOTE_CLIENTS = 1_000_000  # per reply: more is a broken or hostile member


class Directory:
    """Lists, finds, kicks charge points and reports node status across every member."""

    _log = Logger()

    def __init__(
        self, service: GatewayService | Any, own_listeners: Callable[[], list[Any]] | None = None
    ) -> None:
        """``own_listeners``: the listeners whose connections are this member's (default: the
        service's; a workers' master, whose workers report their own, has none)."""
        self.service = service
        self._own_listeners = own_listeners or (lambda: service.listeners)
        self.cluster = service.router.cluster
        self.cluster.serve("clients", self._clients_op)
        self.cluster.serve("kick", self._kick_op)
        self.cluster.serve("status", lambda args: self.local_status())

    @property
    def node(self) -> str:
        return self.cluster.node

    def nodes(self) -> list[str]:
        """The nodes of every member known online, this one's included."""
        return sorted(set(self.cluster.online().values()))

    # -- this member -------------------------------------------------------

    def local_clients(self, cid: str | None = None) -> list[dict[str, Any]]:
        router, config = self.service.router, self.service.config
        if cid is not None:
            attached = router.find(cid)
            return [] if attached is None else [client_object(config, attached)]
        return [client_object(config, attached) for attached in router.attached()]

    def local_kick(self, cid: str) -> bool:
        attached = self.service.router.find(cid)
        if attached is None:
            return False
        attached.connection.close(1000, "kicked")
        return True

    def local_status(self) -> dict[str, Any]:
        """This member's share of ``node_status``: status, max_connections, current_connections."""
        service = self.service
        listeners = self._own_listeners()
        limits = [s.listener.max_connections for s in listeners]
        return {
            "node": self.node,
            "status": "running" if service.enabled else "stopped",
            "max_connections": "infinity" if None in limits else sum(x for x in limits if x is not None),
            "current_connections": sum(s.connections for s in listeners),
        }

    def _clients_op(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        cid = args.get("clientid")
        return self.local_clients(cid if isinstance(cid, str) else None)

    def _kick_op(self, args: dict[str, Any]) -> bool:
        cid = args.get("clientid")
        return isinstance(cid, str) and self.local_kick(cid)

    # -- every member --------------------------------------------------------

    @inlineCallbacks
    def clients(self, cid: str | None = None) -> Deferred[list[dict[str, Any]]]:
        """Every member's client objects (only ``cid``'s when given): this member's first, then by member."""
        objects = self.local_clients(cid)
        if cid is not None and objects:
            return objects
        gathered: Gathered = yield self.cluster.ask("clients", {} if cid is None else {"clientid": cid})
        for member, reply in sorted(gathered.replies.items()):
            result = reply.result
            if not isinstance(result, list) or len(result) > MAX_REMOTE_CLIENTS:
                self._reject(member, "clients", result)
                continue
            good = [c for c in result if _client_shaped(c) and (cid is None or c["clientid"] == cid)]
            if len(good) != len(result):
                self._reject(member, "clients", "some entries")
            objects.extend(good)
        return objects

    @inlineCallbacks
    def find(self, cid: str) -> Deferred[dict[str, Any] | None]:
        found = yield self.clients(cid)
        return found[0] if found else None

    @inlineCallbacks
    def kick(self, cid: str) -> Deferred[bool]:
        """Close ``cid`` with 1000 "kicked" wherever it is connected; whether it was found."""
        if self.local_kick(cid):
            return True
        gathered: Gathered = yield self.cluster.ask("kick", {"clientid": cid})
        return any(reply.result is True for reply in gathered.replies.values())

    @inlineCallbacks
    def node_status(self) -> Deferred[list[dict[str, Any]]]:
        """One entry per node: ``running`` when any of its members is, connections summed
        (``infinity`` absorbs); a member known online that did not answer makes its node ``unknown``."""
        gathered: Gathered = yield self.cluster.ask("status")
        shares = [self.local_status()]
        for member, reply in gathered.replies.items():
            if _status_shaped(reply.result):
                shares.append({**reply.result, "node": reply.node})
            else:
                self._reject(member, "status", reply.result)
        online = self.cluster.online()
        for member in gathered.missing:
            shares.append({"node": online.get(member, member), "status": "unknown",
                           "max_connections": 0, "current_connections": 0})  # fmt: skip
        nodes: dict[str, dict[str, Any]] = {}
        for share in shares:
            first = {"node": share["node"], "status": share["status"]}
            entry = nodes.setdefault(share["node"], {**first, "max_connections": 0, "current_connections": 0})
            if share["status"] == "running" or entry["status"] == "unknown":
                entry["status"] = share["status"]
            maxima = (entry["max_connections"], share["max_connections"])
            entry["max_connections"] = "infinity" if "infinity" in maxima else sum(maxima)
            entry["current_connections"] += share["current_connections"]
        return [nodes[node] for node in sorted(nodes, key=lambda n: (n != self.node, n))]

    def _reject(self, member: str, op: str, what: Any) -> None:
        self._log.warn(
            "ignored a malformed {op} reply from gateway member {member}: {what}",
            op=op,
            member=member,
            what=clip(repr(what), 120),
        )


def _client_shaped(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("clientid"), str)
        and isinstance(value.get("node"), str)
        and isinstance(value.get("connected_at"), str)
    )


def _status_shaped(value: Any) -> bool:
    if not isinstance(value, dict) or value.get("status") not in ("running", "stopped"):
        return False
    maximum, current = value.get("max_connections"), value.get("current_connections")
    counts = (maximum, current)
    if any(isinstance(x, bool) for x in counts) or not isinstance(current, int) or current < 0:
        return False
    return maximum == "infinity" or (isinstance(maximum, int) and maximum >= 0)
