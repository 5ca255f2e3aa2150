"""The master <-> worker control channel: JSON requests and replies, length-prefixed, on a socket pair.

Either side may ``call`` an operation of the other's ``handlers``; a reply carries the same ``id``.
The master asks a worker for its metrics text, its status, to reload certificates or config, to
enable or disable its listeners and to stop (drain); a worker tells the master once it is ``ready``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

Handler = Callable[..., Any]


class RemoteError(Exception):
    """The other side's handler failed; the text is its message."""


class ControlChannel(Int32StringReceiver):
    """One end of the channel; ``handlers`` answer the other side's calls (their result as JSON)."""

    MAX_LENGTH = 64 * 1024 * 1024  # a worker's metrics text is the largest message
    _log = Logger()

    def __init__(self, handlers: Mapping[str, Handler], on_lost: Callable[[], None] | None = None) -> None:
        self.handlers = handlers
        self.on_lost = on_lost
        self._next = 0
        self._pending: dict[int, Deferred[Any]] = {}
        self.connected = False

    def connectionMade(self) -> None:
        self.connected = True

    def call(self, op: str, **args: Any) -> Deferred[Any]:
        """Ask the other side to run ``op``; fires with its result or fails with ``RemoteError``."""
        if not self.connected:
            return fail(ConnectionDone("the control channel is closed"))
        self._next += 1
        d: Deferred[Any] = Deferred()
        self._pending[self._next] = d
        self._send({"id": self._next, "op": op, "args": args})
        return d

    def notify(self, op: str, **args: Any) -> None:
        """Tell the other side ``op`` with no reply expected."""
        if self.connected:
            self._send({"op": op, "args": args})

    def _send(self, message: dict[str, Any]) -> None:
        self.sendString(json.dumps(message, separators=(",", ":")).encode("utf-8"))

    def stringReceived(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            self._log.error("control channel: a message that is not JSON; closing it")
            self.transport.loseConnection()
            return
        if "op" in message:
            self._handle(message)
            return
        d = self._pending.pop(message.get("id"), None)
        if d is None:
            return
        if "error" in message:
            d.errback(RemoteError(str(message["error"])))
        else:
            d.callback(message.get("result"))

    def _handle(self, message: dict[str, Any]) -> None:
        op, ident = message.get("op"), message.get("id")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            result: Deferred[Any] = Deferred()
            result.errback(RemoteError(f"unknown operation {op!r}"))
        else:
            result = maybeDeferred(handler, **(message.get("args") or {}))
        if ident is None:
            result.addErrback(lambda f: self._log.failure("control operation {op} failed", f, op=op))
            return

        def answered(value: Any) -> None:
            if self.connected:
                self._send({"id": ident, "result": value})

        def failed(failure: Failure) -> None:
            self._log.failure("control operation {op} failed", failure, op=op)
            if self.connected:
                self._send({"id": ident, "error": failure.getErrorMessage()})

        result.addCallbacks(answered, failed)

    def connectionLost(self, reason: Failure = ConnectionDone()) -> None:  # noqa: B008 - Twisted's default
        self.connected = False
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(ConnectionDone("the control channel closed"))
        if self.on_lost is not None:
            self.on_lost()
