"""The interfaces the core calls out through, and the values that cross them.

Adapters implement these: the MQTT link (``IBrokerLink``), each charge point's
WebSocket (``IChargePoint``) and the authenticators (``IAuthenticator``). The
core reads the typed config and counts through ``ocppgw.metrics``, and imports
no adapter (a test checks that importing it loads no Autobahn, paho or OpenSSL).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import zope.interface
from twisted.internet.defer import Deferred

Handler = Callable[[str, bytes], None]
ConnectionObserver = Callable[[bool], None]
RoomObserver = Callable[[], None]


class IBrokerLink(zope.interface.Interface):
    """A broker connection used from the reactor thread only."""

    connected = zope.interface.Attribute(
        "bool: whether the link is connected, as the reactor thread has been told so far"
    )

    def start() -> None:
        """Begin connecting; never blocks, never raises when the broker is down."""

    def stop(timeout: float) -> Deferred[None]:
        """Wait (up to ``timeout`` seconds of reactor time) until every accepted QoS>0 publish is
        acknowledged, then disconnect cleanly (DISCONNECT, so the will is not sent) and stop the
        network thread; fires None."""

    def publish(topic: str, payload: bytes, qos: int, retain: bool = False) -> bool:
        """Queue a message; False only when the bounded buffer is full (the caller then refuses the
        message). Never blocks. Topics are checked once, by the core, when rendered
        (``ocppgw.core.topics``), not per message. Raises ValueError for a bad QoS."""

    def room() -> int:
        """How many more messages ``publish`` accepts now at least (0 once stopped). When it answers
        0, the room observers are called once there is room again."""

    def add_room_observer(observer: RoomObserver) -> None:
        """Call ``observer()`` in the reactor thread when the buffer has room again after ``room``
        answered 0; before ``stop`` decides that everything was sent, so what an observer publishes
        then is still waited for."""

    def subscribe(topic_filter: str, qos: int, handler: Handler) -> None:
        """Deliver messages matching ``topic_filter`` to ``handler(topic, payload)`` in the reactor
        thread, now and after every reconnect; a second call for the same filter replaces the handler."""

    def unsubscribe(topic_filter: str) -> None:
        """Forget ``topic_filter`` and tell the broker if connected."""

    def add_connection_observer(observer: ConnectionObserver) -> None:
        """Call ``observer(True)`` on each connect and ``observer(False)`` on each disconnect, in the
        reactor thread."""

    def reload_tls() -> list[tuple[str, str]]:
        """Re-read the ``[mqtt]`` TLS files for the next connection to the broker (the live one is kept);
        returns ``(key, reason)`` per problem, and then keeps the files it had."""


@dataclass(frozen=True)
class Will:
    """The last will the broker publishes if the link drops without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


class IChargePoint(Protocol):
    """The WebSocket side of one charge point, as the core sees it."""

    def send_text(self, text: str) -> None:
        """Write one text frame."""

    def close(self, code: int, reason: str) -> None:
        """Close the WebSocket with this code and reason."""


@dataclass(frozen=True)
class PeerIdentity:
    """What a client certificate says about its holder."""

    cn: str | None
    dn: str


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a charge point presented; the password stays bytes and is never logged.

    ``peer`` is ``host:port`` (``[host]:port`` for IPv6), the address the gateway trusts (after the
    PROXY header or a trusted proxy's address header); ``listener`` is its label (``ws.default``).
    """

    cid: str
    peer: str
    listener: str
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)
    certificate_cn: str | None = None
    certificate_dn: str | None = None


class Outcome(enum.Enum):
    """What an authenticator says; the reference gateway's provider results, plus "unavailable"."""

    ALLOW = "allow"
    DENY = "deny"  # reason: bad_username_or_password (known user, wrong secret) or not_authorized
    IGNORE = "ignore"  # not mine to decide (unknown user, no password): refused with not_authorized
    UNAVAILABLE = "unavailable"  # no answer: unreachable, failing, or past its timeout (HTTP 503)


@dataclass(frozen=True, slots=True)
class Decision:
    """An authenticator's answer; ``reason`` is the HTTP body of a refusal, or what failed (for logs)."""

    outcome: Outcome
    reason: str = ""
    is_superuser: bool = False

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    @classmethod
    def allow(cls, is_superuser: bool = False) -> Decision:
        return cls(Outcome.ALLOW, is_superuser=is_superuser)

    @classmethod
    def deny(cls, reason: str = "not_authorized") -> Decision:
        return cls(Outcome.DENY, reason)

    @classmethod
    def ignore(cls) -> Decision:
        return cls(Outcome.IGNORE, "not_authorized")

    @classmethod
    def unavailable(cls, why: str) -> Decision:
        return cls(Outcome.UNAVAILABLE, why)


class IAuthenticator(zope.interface.Interface):
    def authenticate(credentials: Credentials) -> Deferred[Decision]:
        """Decide whether this charge point may connect. The Deferred never fails: a backend that
        cannot answer says ``Outcome.UNAVAILABLE``, within its own ``request_timeout``."""
