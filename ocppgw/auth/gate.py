"""What every handshake asks of the configured authenticator: one answer, in time, counted and logged.

The backends answer within their own ``request_timeout``; the gate adds a last bound half a second
later, so a backend that hangs still gets its charge point a 503 in time. An answer that is ready at
once (the built-in database with a cheap algorithm, the cache) arms no timer at all. A failing backend (its
Deferred fails, which it should not) is UNAVAILABLE too, logged with its traceback once per failure.
With ``cache_ttl``, an allow is kept per (cid, username, password digest) for that long, bounded.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ocppgw.core.ports import Credentials, Decision, IAuthenticator
from ocppgw.metrics import Metrics

GRACE = 0.5  # seconds the gate waits past the backend's own request_timeout
MAX_CACHED = 100_000  # decisions kept at most; the oldest go first

_CacheKey = tuple[str, str | None, bytes]


@implementer(IAuthenticator)
class AuthenticationGate:
    """Asks ``authenticator`` (the ``backend``), never for longer than ``timeout`` + ``GRACE``."""

    _log = Logger()

    def __init__(
        self,
        authenticator: IAuthenticator,
        backend: str,
        timeout: float,
        cache_ttl: float,
        clock: IReactorTime,
        metrics: Metrics,
    ) -> None:
        self.authenticator, self.backend = authenticator, backend
        self._timeout = timeout + GRACE
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._metrics = metrics
        self._cache: OrderedDict[_CacheKey, float] = OrderedDict()  # key -> expiry, oldest first

    def authenticate(self, credentials: Credentials) -> Deferred[Decision]:
        key = self._cache_key(credentials) if self._cache_ttl > 0 else None
        if key is not None and self._cached(key):
            self._metrics.inc("auth_cache_hits", backend=self.backend)
            return succeed(Decision.allow())
        try:
            d = self.authenticator.authenticate(credentials)
        except Exception:
            d = fail()
        if not d.called or d.paused:
            d.addTimeout(self._timeout, self._clock)
        extra = (credentials, key)
        return d.addCallbacks(self._decided, self._failed, callbackArgs=extra, errbackArgs=extra)

    def _failed(self, failure: Failure, credentials: Credentials, key: _CacheKey | None) -> Decision:
        if failure.check(TimeoutError):
            why = f"no answer within {self._timeout:g}s"
            return self._decided(Decision.unavailable(why), credentials, key)
        self._log.failure(
            "authentication backend {backend} failed for {cid}",
            failure,
            backend=self.backend,
            cid=credentials.cid,
        )
        why = f"backend error: {failure.getErrorMessage()[:200]}"
        return self._decided(Decision.unavailable(why), credentials, key)

    def _decided(self, decision: Decision, credentials: Credentials, key: _CacheKey | None) -> Decision:
        result = decision.outcome.value
        self._metrics.inc("auth_decisions", backend=self.backend, result=result)
        cid, username, reason = credentials.cid, (credentials.username or "")[:200], decision.reason[:300]
        # one line per handshake: formatted here in one go (Twisted's formatter would parse six
        # fields in Python), the fields kept alongside for observers that want them
        self._log.info(
            "{decision}",
            decision=f"authentication of {cid} from {credentials.peer} (username {username!r}) "
            f"by {self.backend}: {result} {reason}",
            cid=cid,
            username=username,
            backend=self.backend,
            result=result,
            reason=reason,
        )
        if key is not None and decision.allowed:
            self._remember(key)
        return decision

    @staticmethod
    def _cache_key(credentials: Credentials) -> _CacheKey:
        return credentials.cid, credentials.username, hashlib.sha256(credentials.password or b"").digest()

    def _cached(self, key: _CacheKey) -> bool:
        now = self._clock.seconds()
        while self._cache:  # entries expire in insertion order: drop the spent ones at the front
            oldest, expiry = next(iter(self._cache.items()))
            if expiry > now:
                break
            del self._cache[oldest]
        return key in self._cache

    def _remember(self, key: _CacheKey) -> None:
        self._cache.pop(key, None)
        self._cache[key] = self._clock.seconds() + self._cache_ttl
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)
