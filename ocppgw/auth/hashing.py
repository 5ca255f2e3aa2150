"""Password hashing as the reference gateway stores passwords (built-in database, SQL, Redis, MongoDB).

Formats are the reference's, so that exported users import and authenticate: salts are text (a
generated one is 32 lowercase hex characters), hex digests compare case-insensitively, ``plain``
compares exactly, pbkdf2 is stored as lowercase hex, and bcrypt stores the whole crypt string (which
is its own salt; generated as ``$2a$``, ``$2a$/$2b$/$2y$`` accepted). Comparisons are constant-time.

``check`` and ``generate`` are pure and may block (bcrypt, pbkdf2): backends call them through a
``HashingPool``, which runs the expensive algorithms in low-priority processes of their own, queued
and shed on the reactor (``ocppgw.auth.hash_workers``), and the cheap ones inline.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import bcrypt
from twisted.internet.defer import Deferred, fail, succeed

from ocppgw.auth.hash_workers import HashWorkers
from ocppgw.auth.idle_group import make_idle_group

if TYPE_CHECKING:
    from ocppgw.config.sections import AuthenticationSection

ALGORITHMS = ("plain", "md5", "sha", "sha256", "sha512", "bcrypt", "pbkdf2")
SALT_POSITIONS = ("prefix", "suffix", "disable")
MAC_FUNS = ("sha", "sha224", "sha256", "sha384", "sha512")  # md4, md5, ripemd160: refused (see config)
EXPENSIVE = frozenset({"bcrypt", "pbkdf2"})
_DIGESTS = {"md5": "md5", "sha": "sha1", "sha256": "sha256", "sha512": "sha512"}
_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
_BCRYPT_MAX = 72  # bytes of a password bcrypt looks at; longer ones are cut, as the reference's C code does
_DK_LENGTH_MAX = 2**32 - 1
# bcrypt at salt_rounds 10 takes ~60 ms a job per process: 256 waiting is ~15 s of work on one core, past
# any request_timeout (those jobs are skipped, not run); beyond it a handshake is refused at once
MAX_QUEUED_HASHES = 256

T = TypeVar("T")


class HashingError(Exception):
    """A stored hash or salt cannot be checked (a non-text salt, a malformed bcrypt hash): a backend
    failure, not a wrong password."""


@dataclass(frozen=True, slots=True)
class HashSettings:
    """``[authentication]``'s hashing keys: how stored passwords are checked and new ones made."""

    algorithm: str = "sha256"
    salt_position: str = "prefix"
    salt_rounds: int = 10
    mac_fun: str = "sha256"
    iterations: int = 4096
    dk_length: int | None = None

    @classmethod
    def of(cls, section: AuthenticationSection) -> HashSettings:
        """The hashing settings of an ``AuthenticationSection``."""
        return cls(
            section.password_hash_algorithm,
            section.salt_position,
            section.salt_rounds,
            section.mac_fun,
            section.iterations,
            section.dk_length,
        )

    @property
    def expensive(self) -> bool:
        """Whether checking takes long enough to keep it off the reactor."""
        return self.algorithm in EXPENSIVE


def _text(value: object, what: str) -> bytes:
    """A stored text value as bytes; anything else (NULL, a number) cannot be hashed with."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    raise HashingError(f"{what} is not text ({type(value).__name__})")


def _salted(settings: HashSettings, salt: object, password: bytes) -> bytes:
    if settings.salt_position == "disable":
        return password
    salt_bytes = _text(salt, "salt")
    return salt_bytes + password if settings.salt_position == "prefix" else password + salt_bytes


def _pbkdf2(settings: HashSettings, salt: object, password: bytes) -> str:
    if settings.mac_fun not in MAC_FUNS:
        raise HashingError(f"pbkdf2 cannot use mac_fun {settings.mac_fun}")
    if settings.dk_length is not None and not 0 < settings.dk_length <= _DK_LENGTH_MAX:
        raise HashingError(f"pbkdf2 dk_length {settings.dk_length} is out of range")
    mac = "sha1" if settings.mac_fun == "sha" else settings.mac_fun
    salt_bytes = _text(salt, "salt")
    try:
        derived = hashlib.pbkdf2_hmac(mac, password, salt_bytes, settings.iterations, settings.dk_length)
    except (ValueError, OverflowError) as e:
        raise HashingError(f"pbkdf2: {e}") from None
    return derived.hex()


def _bcrypt(password: bytes, salt: bytes) -> bytes:
    try:
        return bcrypt.hashpw(password[:_BCRYPT_MAX], salt)
    except ValueError as e:
        raise HashingError(f"bcrypt: {e}") from None


def check(settings: HashSettings, stored_hash: object, salt: object, password: bytes | None) -> bool:
    """Whether ``password`` matches ``stored_hash`` (with ``salt``, text), in constant time.

    No password never matches. Raises ``HashingError`` when the stored values cannot be checked:
    a non-text salt with ``prefix``/``suffix`` or for pbkdf2, a hash that is not text, a malformed
    bcrypt hash. May block for bcrypt and pbkdf2.
    """
    if password is None:
        return False
    stored = _text(stored_hash, "password hash")
    if settings.algorithm == "bcrypt":  # the salt column is ignored: the hash is its own salt
        if not stored.startswith(_BCRYPT_PREFIXES):
            raise HashingError("not a $2a$, $2b$ or $2y$ bcrypt hash")
        return hmac.compare_digest(_bcrypt(password, stored), stored)
    if settings.algorithm == "pbkdf2":
        return hmac.compare_digest(_pbkdf2(settings, salt, password).encode(), stored.lower())
    data = _salted(settings, salt, password)
    if settings.algorithm == "plain":
        return hmac.compare_digest(data, stored)  # case-sensitive
    digest = hashlib.new(_DIGESTS[settings.algorithm], data).hexdigest()
    return hmac.compare_digest(digest.encode(), stored.lower())


def new_salt() -> str:
    """A fresh salt as the reference makes one: 16 random bytes as 32 lowercase hex characters."""
    return secrets.token_bytes(16).hex()


def generate(settings: HashSettings, password: bytes) -> tuple[str, str]:
    """``(password_hash, salt)`` to store for ``password``; may block (bcrypt, pbkdf2).

    bcrypt: a ``$2a$`` hash with ``salt_rounds``, the salt equal to the hash; pbkdf2: a fresh salt,
    the hash in lowercase hex; plain, or ``salt_position = disable``: an empty salt.
    """
    if settings.algorithm == "bcrypt":
        hashed = _bcrypt(password, bcrypt.gensalt(settings.salt_rounds, prefix=b"2a")).decode("ascii")
        return hashed, hashed
    if settings.algorithm == "pbkdf2":
        salt = new_salt()
        return _pbkdf2(settings, salt, password), salt
    salt = "" if settings.algorithm == "plain" or settings.salt_position == "disable" else new_salt()
    data = _salted(settings, salt, password)
    if settings.algorithm == "plain":
        return data.decode("utf-8", "surrogateescape"), salt
    return hashlib.new(_DIGESTS[settings.algorithm], data).hexdigest(), salt


def hashing_processes() -> int:
    """Hashing processes for bcrypt and pbkdf2: one fewer than the cores (at least one), so a storm
    of expensive handshakes leaves the reactor a core of its own."""
    return max(1, (os.cpu_count() or 1) - 1)


def _no_idle_group() -> tuple[None, str]:
    return None, "[authentication] hashing_priority = low"


class HashingPool:
    """``check`` and ``generate`` for a backend: bcrypt and pbkdf2 in ``workers`` (low-priority
    processes of its own; a job that waited past its handshake's ``timeout`` is skipped, a full
    queue refuses at once: both fail the Deferred), the cheap algorithms inline, their Deferred
    already fired. ``start`` and ``stop`` belong to the backend's own."""

    def __init__(self, settings: HashSettings, reactor: Any, timeout: float, priority: str = "idle") -> None:
        """``priority`` (``[authentication] hashing_priority``): ``idle`` puts the processes in a CPU
        group at idle priority where the gateway may make one; ``low`` keeps them at nice 10, which
        still gives bcrypt a share of a machine with no idle CPU."""
        self.settings = settings
        self.timeout = timeout
        self.workers: HashWorkers | None = None
        if settings.expensive:
            group = make_idle_group if priority == "idle" else _no_idle_group
            self.workers = HashWorkers(reactor, hashing_processes(), MAX_QUEUED_HASHES, group)

    def start(self) -> None:
        """For bcrypt and pbkdf2, spawn the hashing processes now."""
        if self.workers is not None:
            self.workers.start()

    def stop(self) -> Deferred[None]:
        """Fires once the hashing processes have ended (at once when there are none)."""
        return succeed(None) if self.workers is None else self.workers.stop()

    def _call(self, function: Callable[..., T], *args: Any) -> Deferred[T]:
        if self.workers is not None:
            return self.workers.run(self.timeout, function, *args)
        try:
            return succeed(function(*args))
        except Exception:
            return fail()

    def check(self, stored_hash: object, salt: object, password: bytes | None) -> Deferred[bool]:
        """``check`` with this pool's settings; fails with ``HashingError`` as ``check`` raises it."""
        return self._call(check, self.settings, stored_hash, salt, password)

    def generate(self, password: bytes) -> Deferred[tuple[str, str]]:
        """``generate`` with this pool's settings."""
        return self._call(generate, self.settings, password)
