"""Authenticators the handshake asks; the interface is ``ocppgw.core.ports.IAuthenticator``."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ocppgw.core.ports import Credentials, Decision, IAuthenticator


@implementer(IAuthenticator)
class AllowAll:
    """Every charge point may connect, as the reference gateway does with no authenticator."""

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        return succeed(Decision.allow())
