"""The listen queue: a listener's ``backlog`` is how many connections the kernel holds before the
gateway accepts them. Linux caps it at ``net.core.somaxconn`` without a word, and in a reconnect storm
a full queue drops SYNs, which the clients resend only on their retransmission schedule (1, 3, 7, 15
s), so a storm that the gateway could take in 12 s took 32 (bench/README.md, issue 12). At start-up
one line per listener says when its ``backlog`` is above the kernel's cap, with both numbers.
"""

from __future__ import annotations

from twisted.logger import Logger

from ocppgw.config import GatewayConfig

SOMAXCONN = "/proc/sys/net/core/somaxconn"

_log = Logger()


def somaxconn(path: str = SOMAXCONN) -> int | None:
    """The kernel's cap on a listen queue, or None where it cannot be read (not Linux, no /proc)."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def capped_listeners(config: GatewayConfig, cap: int | None) -> list[str]:
    """The sections of the listeners whose ``backlog`` is above ``cap``, each said in one warning."""
    if cap is None:
        return []
    capped = []
    for listener in config.listeners:
        if listener.backlog > cap:
            capped.append(listener.section)
            _log.warn(
                "[{section}] backlog = {backlog}, but the kernel caps listen queues at {cap} "
                "(net.core.somaxconn): raise that sysctl to {backlog} for the whole queue",
                section=listener.section,
                backlog=listener.backlog,
                cap=cap,
            )
    return capped


def check_listen_queues(config: GatewayConfig, path: str = SOMAXCONN) -> list[str]:
    """At start-up: warn for each listener whose queue the kernel would cap."""
    return capped_listeners(config, somaxconn(path))
