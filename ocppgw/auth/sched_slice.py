"""A short scheduler slice for the calling thread: ``sched_setattr(2)`` through ctypes.

On Linux's EEVDF scheduler a task that keeps a core busy (a bcrypt check) is protected until its
slice (about 0.75 ms by default) is used, so every task woken meanwhile on that core (the gateway's
reactor, the broker) waits for it. Since Linux 6.12 a fair (``SCHED_OTHER``) task can ask for a
slice of its own through ``sched_attr.sched_runtime`` (clamped to 0.1-100 ms); a hashing process
with the shortest one yields almost at once to a woken task. Python has no ``os.sched_setattr``,
hence the syscall through ctypes; machines whose syscall number is not known here are skipped.
"""

from __future__ import annotations

import ctypes
import platform

SCHED_OTHER = 0

# (sched_setattr, sched_getattr) by platform.machine()
_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}


class _SchedAttr(ctypes.Structure):
    """``struct sched_attr`` of linux/sched/types.h, SCHED_ATTR_SIZE_VER0 (48 bytes)."""

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


def _syscall(which: int, *args: int | ctypes._CArgObject) -> bool:
    """The syscall ``which`` (0: sched_setattr, 1: sched_getattr) of this machine on the calling
    thread (pid 0); False if it failed or the machine is not known here."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    # variadic: pass every integer as a long, as the kernel reads a register's 64 bits
    longs = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return libc.syscall(ctypes.c_long(numbers[which]), ctypes.c_long(0), *longs) == 0


def set_fair_slice(slice_ns: int, nice: int) -> bool:
    """Make the calling thread ``SCHED_OTHER`` at ``nice`` and ask for a slice of ``slice_ns``.

    True if the kernel accepted the call (a kernel older than 6.12 may accept it yet ignore the
    slice: ``fair_slice`` tells); False if it refused it or the machine is not known here, in which
    case nothing changed."""
    attr = _SchedAttr(
        size=ctypes.sizeof(_SchedAttr), sched_policy=SCHED_OTHER, sched_nice=nice, sched_runtime=slice_ns
    )
    return _syscall(0, ctypes.byref(attr), 0)


def fair_slice() -> int | None:
    """The calling thread's slice in ns as ``sched_getattr(2)`` reads it back (the kernel's default
    slice unless one was asked for; 0 on kernels older than 6.12), or None if the call failed or the
    machine is not known here."""
    attr = _SchedAttr()
    if not _syscall(1, ctypes.byref(attr), ctypes.sizeof(_SchedAttr), 0):
        return None
    return int(attr.sched_runtime)
