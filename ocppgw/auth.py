"""Who may connect: the authenticator interface the handshake asks.

Backends (built-in table, SQL, Redis, HTTP) implement ``IAuthenticator``; the
handshake waits on the Deferred, so a backend may answer later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a charge point presented; the password stays bytes and is never logged."""

    cid: str
    peer: str
    listener: str
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)
    certificate_cn: str | None = None
    certificate_dn: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


class IAuthenticator(Interface):
    def authenticate(credentials: Credentials) -> Deferred[Decision]:
        """Decide whether this charge point may connect."""


@implementer(IAuthenticator)
class AllowAll:
    """Every charge point may connect, as the reference gateway does with no authenticator."""

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        return succeed(Decision(True))
