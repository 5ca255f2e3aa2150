"""The open-file limit: each connection is a file descriptor, and a process stops accepting at its
soft ``RLIMIT_NOFILE``. At start-up the soft limit is raised to the hard limit (which only root or
systemd's ``LimitNOFILE`` can raise), and one line says when the listeners allow more connections
than that leaves room for; more connections per box then come from ``[gateway] workers``.
"""

from __future__ import annotations

import resource
from collections.abc import Callable

from twisted.logger import Logger

from ocppgw.config import GatewayConfig

# descriptors a gateway process uses besides its charge points: the broker, listening sockets,
# logs, SQLite files, the control channel, pipes and libraries
RESERVED = 64

_log = Logger()


def raise_soft_limit(
    get: Callable[[int], tuple[int, int]] = resource.getrlimit,
    set_limit: Callable[[int, tuple[int, int]], None] = resource.setrlimit,
) -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one where the system allows; (soft, hard) after."""
    soft, hard = get(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            set_limit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # a hard limit above the kernel's nr_open: keep the soft one
            return soft, hard
        soft = hard
    return soft, hard


def check_connections(config: GatewayConfig, soft: int, hard: int, workers: int = 1) -> bool:
    """Log one warning when a process's share of the listeners' ``max_connections`` does not fit in
    ``soft`` open files (``RESERVED`` kept apart); whether it fits."""
    limits = [listener.max_connections for listener in config.listeners]
    room = max(soft - RESERVED, 0) if soft != resource.RLIM_INFINITY else None
    if room is None:
        return True
    if any(limit is None for limit in limits):
        wanted: int | None = None
    else:
        wanted = sum(-(-limit // workers) for limit in limits if limit is not None)
        if wanted <= room:
            return True
    _log.warn(
        "listeners allow {wanted} connections per process, but the open-file limit is {soft} (hard "
        "{hard}): about {room} fit; raise the hard limit (LimitNOFILE) or [gateway] workers",
        wanted="unlimited" if wanted is None else wanted,
        soft=soft,
        hard="unlimited" if hard == resource.RLIM_INFINITY else hard,
        room=room,
    )
    return False


def open_files(config: GatewayConfig, workers: int = 1) -> None:
    """Raise the soft limit and say once when the listeners' limits do not fit (start-up)."""
    soft, hard = raise_soft_limit()
    check_connections(config, soft, hard, workers)
