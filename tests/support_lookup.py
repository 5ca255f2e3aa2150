"""Shared by the database backends' tests: a section, credentials, an in-line pool, and a stand-in for
the password check (``ocppgw.auth.hashing`` lives on another branch) that knows plain and sha256."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred

from ocppgw.auth.lookup import Verify
from ocppgw.config.sections import AuthenticationSection
from ocppgw.core.ports import Credentials

SALT = "e378187547bf2d6f0545a3f441aa4d8a"


def sha256_suffix(password: bytes, salt: str = SALT) -> str:
    """The stored hash of ``password`` with sha256, salt suffix (A.1)."""
    return hashlib.sha256(password + salt.encode()).hexdigest()


def fake_verify(algorithm: str = "sha256", salt_position: str = "suffix") -> tuple[Verify, list[tuple]]:
    """A check of plain or sha256 (A.1) and the list of its calls; a NULL salt with a salted position
    fails, as the real glue does."""
    calls: list[tuple] = []

    def check(stored_hash: str, salt: str | None, password: bytes) -> bool:
        calls.append((stored_hash, salt, password))
        if salt is None and salt_position != "disable":
            raise ValueError("the stored salt is NULL")
        salt_bytes = (salt or "").encode()
        data = {"prefix": salt_bytes + password, "suffix": password + salt_bytes}.get(salt_position, password)
        if algorithm == "plain":
            return hmac.compare_digest(data, stored_hash.encode())
        return hmac.compare_digest(hashlib.sha256(data).hexdigest(), stored_hash.lower())

    def verify(stored_hash: str, salt: str | None, password: bytes) -> Deferred[bool]:
        return maybeDeferred(check, stored_hash, salt, password)

    return verify, calls


def section(backend: str, **fields: Any) -> AuthenticationSection:
    """An ``[authentication]`` section of ``backend`` with sha256/suffix hashing and 1 s timeouts."""
    defaults: dict[str, Any] = {"salt_position": "suffix", "request_timeout": 1.0, "pool_size": 2}
    defaults.update(fields)
    return AuthenticationSection(backend=backend, **defaults)


def credentials(
    username: str | None = "alice", password: bytes | None = b"secret", cid: str = "CP1"
) -> Credentials:
    """What a charge point with Basic auth ``username:password`` on ``/ocpp/CP1`` presents."""
    return Credentials(
        cid=cid, peer="10.0.0.5:4711", listener="ws.default", username=username, password=password
    )


class InlinePool:
    """``lookup.BlockingPool`` run in the calling thread (unit tests on a ``Clock``); ``hang`` makes
    every job a Deferred that never fires, as a stuck worker."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.hang = False
        self.started = self.stopped = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> Deferred[None]:
        self.stopped = True
        return maybeDeferred(lambda: None)

    def run(self, timeout: float, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self.jobs.append((function, args))
        return Deferred() if self.hang else maybeDeferred(function, *args)
