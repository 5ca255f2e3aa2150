"""paho's callbacks, from whatever thread runs paho, as events handled in order in the reactor thread.

Each callback appends a tuple to a thread-safe deque.  At most one
``callFromThread`` is pending at any time and it drains the whole deque, so a
burst of messages costs one hand-off, not one per message.  A driver that runs
paho in the reactor thread itself appends with ``events.append`` and calls
``drain`` when paho returns (``ocppgw.mqtt.reactor_loop``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

# Events as tuples led by one of these tags.
CONNECT = "connect"  # (tag, failed, reason)
CONNECT_FAIL = "connect_fail"  # (tag,)
ATTEMPT = "attempt"  # (tag,): paho is about to open a connection
DISCONNECT = "disconnect"  # (tag, reason)
MESSAGE = "message"  # (tag, topic or None when not UTF-8, payload)
ACK = "ack"  # (tag, mid)
SUBACK = "suback"  # (tag, mid, ((index, reason), ...) of the refused filters)
TLS_REFUSED = "tls_refused"  # (tag, reason): handshake or hostname check failed, before CONNECT

Event = tuple[Any, ...]


def reason_text(reason_code: Any) -> str:
    """A paho reason code as ``"Name (value)"`` for logs."""
    value = getattr(reason_code, "value", reason_code)
    return f"{reason_code} ({value})"


class EventQueue:
    """The events paho reported and the reactor has not handled yet."""

    max_batch = 10000
    """Events handled per reactor turn; a longer backlog continues in a later turn."""

    def __init__(
        self, reactor: Any, handle: Callable[[Event], None], after: Callable[[], None], log: Logger
    ) -> None:
        """``handle`` takes one event; ``after`` runs once each drain has handled its batch."""
        self._reactor = reactor
        self._handle = handle
        self._after = after
        self._log = log
        self.events: deque[Event] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, event: Event) -> None:
        """Hand an event to the reactor; called in any thread, never blocks."""
        self.events.append(event)
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._reactor.callFromThread(self.drain)

    def drain(self) -> None:
        """Handle the events posted so far, in order (reactor thread)."""
        with self._lock:
            self._scheduled = False
        events = self.events
        for _ in range(self.max_batch):
            try:
                event = events.popleft()
            except IndexError:
                break
            try:
                self._handle(event)
            except Exception:
                self._log.failure("handling MQTT event {event!r} failed", event=event[0])
        else:
            with self._lock:
                again = bool(events) and not self._scheduled
                if again:
                    self._scheduled = True
            if again:
                self._reactor.callFromThread(self.drain)  # let other work run first
        self._after()

    def install(self, client: Any) -> None:
        """Make ``client``'s callbacks post here."""
        client.on_pre_connect = self._paho_pre_connect
        client.on_connect = self._paho_connect
        client.on_connect_fail = self._paho_connect_fail
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        client.on_publish = self._paho_publish
        client.on_subscribe = self._paho_subscribe

    # -- paho's callbacks ---------------------------------------------------------

    def _paho_pre_connect(self, client: Any, userdata: Any) -> None:
        self.post((ATTEMPT,))

    def _paho_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.post((CONNECT, bool(getattr(reason_code, "is_failure", False)), reason_text(reason_code)))

    def _paho_connect_fail(self, client: Any, userdata: Any) -> None:
        self.post((CONNECT_FAIL,))

    def _paho_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self.post((DISCONNECT, reason_text(reason_code)))

    def _paho_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = None
        self.post((MESSAGE, topic, message.payload))

    def _paho_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self.post((ACK, mid))

    def _paho_subscribe(
        self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any
    ) -> None:
        refused = tuple(
            (index, reason_text(code))
            for index, code in enumerate(reason_codes)
            if getattr(code, "is_failure", False)
        )
        self.post((SUBACK, mid, refused))
