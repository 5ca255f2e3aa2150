"""Log lines at a fraction of Twisted's formatting cost, same text.

Every connect and disconnect is one info line; through twistd's own ``textFileLogObserver`` such a
line costs ~30 us, two thirds of it Twisted's pure-Python ``string.Formatter`` and a fresh time stamp
(timezone lookup and ``strftime``) per event. ``classic_line`` writes the same text with
``str.format_map`` and one time stamp per second, and falls back to Twisted's formatter for anything
that needs it (``{callable()}`` fields, tracebacks, flattened events, a format that does not format).

twistd takes its log observer from the application's ``ILogObserver`` component when it has one;
``TwistdLogging`` gives it ``twistd_observer``, which writes where twistd's own would (``--logfile``,
``-n``), and leaves twistd's choice alone for ``--syslog`` and ``--logger``.

A worker's events reach the master as ``worker_record`` lines on its stderr (text formatted in the
worker, scalar fields kept) and become events again in ``relayed_event``.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

import orjson
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogLevel,
    eventAsText,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile

RECORD = "\x1e"  # starts a worker's record line; anything else on its stderr is plain text
_SCALARS = (str, int, float, bool, type(None))
_stamps: dict[int, str] = {}


def stamp(when: float | None) -> str:
    """``formatTime(when)`` (RFC 3339, to the second), formatted once per second."""
    if when is None:
        return "-"
    second = int(when)
    text = _stamps.get(second)
    if text is None:
        _stamps.clear()
        text = _stamps[second] = formatTime(when, timeFormatRFC3339)
    return text


def _fast_text(event: dict[str, Any]) -> str | None:
    """The event's message by ``str.format_map``, or None where Twisted's formatter must do it."""
    fmt = event.get("log_format")
    if type(fmt) is not str or "log_failure" in event or "log_flattened" in event:
        return None
    try:
        return fmt.format_map(event)
    except Exception:
        return None


def _system(event: dict[str, Any]) -> str:
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        return f"{event.get('log_namespace', '-')}#{'-' if level is None else level.name}"
    try:
        return str(system)
    except Exception:
        return "UNFORMATTABLE"


def classic_line(event: dict[str, Any]) -> str | None:
    """What ``formatEventAsClassicLogText`` returns for ``event``, time stamps in RFC 3339."""
    text = _fast_text(event)
    if text is None:
        return formatEventAsClassicLogText(event, formatTime=stamp)
    if not text:
        return None
    line = f"{stamp(event.get('log_time'))} [{_system(event)}] {text}"
    return line.replace("\n", "\n\t") + "\n"


def message_text(event: dict[str, Any]) -> str:
    """The event's message, with its traceback when it carries a failure."""
    text = _fast_text(event)
    if text is not None:
        return text
    if "log_failure" in event:
        return eventAsText(event, includeTimestamp=False, includeSystem=False)
    return formatEvent(event)


def worker_record(event: dict[str, Any]) -> str:
    """One line for the master: time, level, namespace, the formatted message, the scalar fields."""
    level = event.get("log_level")
    fields = {k: v for k, v in event.items() if not k.startswith("log_") and type(v) in _SCALARS}
    record = {
        "t": event.get("log_time"),
        "l": level.name if isinstance(level, type(LogLevel.info)) else "info",
        "n": event.get("log_namespace", "-"),
        "m": message_text(event),
        "f": fields,
    }
    return RECORD + orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS).decode() + "\n"


def relayed_event(line: str, member: str, now: float) -> dict[str, Any] | None:
    """The event a ``worker_record`` line stands for, from worker ``member``; None if it is not one."""
    try:
        record = orjson.loads(line[1:])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    fields, text, when = record.get("f"), record.get("m"), record.get("t")
    event = {k: v for k, v in fields.items() if not k.startswith("log_")} if isinstance(fields, dict) else {}
    try:
        level = LogLevel.levelWithName(str(record.get("l")))
    except Exception:
        level = LogLevel.info
    namespace = str(record.get("n", "-"))
    event.update(
        log_format="{log_text}",
        log_text=str(text),
        log_time=when if isinstance(when, (int, float)) else now,
        log_level=level,
        log_namespace=namespace,
        log_system=f"{member} {namespace}#{level.name}",
        worker=member,
    )
    return event


def twistd_observer(server_options: Any) -> ILogObserver | None:
    """The observer twistd would build from ``server_options``, writing ``classic_line``s.

    None where twistd's own must stand: ``--syslog``, ``--logger``, or ``--logfile -`` for a daemon
    (twistd refuses that itself)."""
    if server_options is None or server_options.get("logger") or server_options.get("syslog"):
        return None
    name = server_options.get("logfile") or ""
    nodaemon = bool(server_options.get("nodaemon"))
    if name == "-" and not nodaemon:
        return None
    if name == "-" or (nodaemon and not name):
        return FileLogObserver(sys.stdout, classic_line)
    logfile = LogFile.fromFullPath(name or "twistd.log")
    if hasattr(signal, "SIGUSR1") and not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(logfile.rotate)

        signal.signal(signal.SIGUSR1, rotate)  # as twistd does for its own log file
    return FileLogObserver(logfile, classic_line)


class TwistdLogging:
    """A service twistd adds to its application that offers it ``log_observer`` (when set).

    twistd reads the application's ``ILogObserver`` after ``makeService`` and before it starts
    logging; an observer the application already has is kept."""

    log_observer: ILogObserver | None = None

    def setServiceParent(self, parent: Any) -> None:
        if (
            self.log_observer is not None
            and isinstance(parent, Componentized)
            and parent.getComponent(ILogObserver, None) is None
        ):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)  # type: ignore[misc]
