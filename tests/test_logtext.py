"""ocppgw.logtext: the same text as Twisted's classic log format, the observer twistd is given, and
the records a worker sends its master."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from twisted.application.service import Application, IServiceCollection, Service
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogLevel,
    eventAsJSON,
    eventFromJSON,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.logtext import (
    RECORD,
    TwistdLogging,
    classic_line,
    relayed_event,
    stamp,
    twistd_observer,
    worker_record,
)

NOW = 1_764_633_600.25


class Thing:
    name = "thing"

    def __repr__(self) -> str:
        return "<Thing>"


def failure_event() -> dict[str, Any]:
    try:
        raise ValueError("boom")
    except ValueError:
        failure = Failure()
    return {"log_format": "it failed: {what}", "what": "x", "log_failure": failure, "log_time": NOW}


def events() -> list[dict[str, Any]]:
    """Events of every shape the formatter meets; each is compared with Twisted's own text."""
    base = {"log_time": NOW, "log_namespace": "ocppgw.core.router.Router", "log_level": LogLevel.info}
    shapes: list[dict[str, Any]] = [
        {"log_format": "charge point {cid} connected from {p}{x}", "cid": "CP1", "p": "1.2.3.4", "x": ""},
        {"log_format": "{n:>6}|{x:.3f}|{t!r}|{t.name}|{s[1]}", "n": 4, "x": 1 / 3, "t": Thing(), "s": [1, 2]},
        {"log_format": "braces {{kept}} and {v}", "v": "{not a field}"},
        {"log_format": "missing {nosuch}"},
        {"log_format": "a call {f()}", "f": lambda: "called"},
        {"log_format": "two\nlines {x}", "x": "and\nthree"},
        {"log_format": ""},
        {"log_format": None, "x": 1},
        {"x": 1},
        {"log_format": "system given", "log_system": "box-w1 x#warn"},
        {"log_format": "odd system", "log_system": 17},
        {"log_format": "no level", "log_level": None},
        {"log_format": "no time", "log_time": None},
        {"log_format": "bad spec {x:q}", "x": 1},
        {"log_format": "bytes {b}", "b": b"\xff"},
    ]
    result = [{**base, **shape} for shape in shapes]
    result.append({"log_format": "bare"})
    result.append(failure_event())
    flat = eventFromJSON(eventAsJSON({**base, "log_format": "flat {cid} {t!r}", "cid": "CP2", "t": Thing()}))
    result.append(flat)
    return result


class ClassicLineTests(SynchronousTestCase):
    def test_same_text_as_twisted(self) -> None:
        """For every shape of event the text is Twisted's ``formatEventAsClassicLogText``'s."""
        for event in events():
            expected = formatEventAsClassicLogText(dict(event), formatTime=formatTime)
            self.assertEqual(classic_line(dict(event)), expected, event.get("log_format"))

    def test_stamp(self) -> None:
        """One text per second, the same as ``formatTime``, whatever the fraction and order of times."""
        for when in (NOW, NOW + 0.74, NOW + 1, NOW - 3600.5, NOW + 0.99, 0.0, time.time()):
            self.assertEqual(stamp(when), formatTime(when))
        self.assertEqual(stamp(None), "-")

    def test_observer_writes_classic_lines(self) -> None:
        """Through Twisted's ``FileLogObserver`` the file gets the same bytes as twistd's observer writes."""
        ours, theirs = Path(self.mktemp()), Path(self.mktemp())
        with ours.open("w") as a, theirs.open("w") as b:
            for event in events():
                FileLogObserver(a, classic_line)(dict(event))
                twisted = FileLogObserver(b, lambda e: formatEventAsClassicLogText(e, formatTime=formatTime))
                twisted(dict(event))
        self.assertEqual(ours.read_text(), theirs.read_text())


class TwistdObserverTests(SynchronousTestCase):
    """``twistd_observer``: where twistd's own observer would write, given twistd's options."""

    def setUp(self) -> None:
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def test_foreground_stdout(self) -> None:
        for options in ({"nodaemon": True, "logfile": None}, {"nodaemon": True, "logfile": "-"}):
            observer = twistd_observer(options)
            self.assertIsInstance(observer, FileLogObserver)
            self.assertIs(observer._outFile, sys.stdout)
            self.assertIs(observer.formatEvent, classic_line)

    def test_log_file(self) -> None:
        """``--logfile F``: a rotating ``LogFile`` at F; SIGUSR1 rotates it, as with twistd's own."""
        path = Path(self.mktemp()).absolute()
        observer = twistd_observer({"nodaemon": False, "logfile": str(path)})
        self.assertIsInstance(observer._outFile, LogFile)
        self.addCleanup(observer._outFile.close)
        self.assertEqual(observer._outFile.path, str(path))
        self.assertTrue(callable(signal.getsignal(signal.SIGUSR1)))

    def test_daemon_default_file(self) -> None:
        """A daemon with no ``--logfile`` writes twistd.log in the working directory."""
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        previous = Path.cwd()
        self.addCleanup(os.chdir, previous)
        os.chdir(directory)
        observer = twistd_observer({"nodaemon": False, "logfile": None})
        self.addCleanup(observer._outFile.close)
        self.assertEqual(observer._outFile.path, str(directory / "twistd.log"))

    def test_twistd_keeps_its_choice(self) -> None:
        """syslog, a --logger factory, or a daemon asked to log to stdout (twistd refuses it): no observer."""
        self.assertIsNone(twistd_observer({"syslog": True, "nodaemon": True}))
        self.assertIsNone(twistd_observer({"logger": "x.y", "nodaemon": True}))
        self.assertIsNone(twistd_observer({"logfile": "-", "nodaemon": False}))
        self.assertIsNone(twistd_observer(None))

    def test_application_component(self) -> None:
        """Added to twistd's application, the service offers its observer; one already there is kept."""

        class Root(TwistdLogging, Service):
            pass

        observer = FileLogObserver(sys.stdout, classic_line)
        application = Application("ocppgw")
        root = Root()
        root.log_observer = observer
        root.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), observer)
        self.assertIn(root, list(IServiceCollection(application)))

        other = Application("ocppgw")
        kept = FileLogObserver(sys.stderr, classic_line)
        other.setComponent(ILogObserver, kept)
        Root().setServiceParent(other)
        second = Root()
        second.log_observer = observer
        second.setServiceParent(other)
        self.assertIs(other.getComponent(ILogObserver), kept)

        bare = Application("ocppgw")
        Root().setServiceParent(bare)
        self.assertIsNone(bare.getComponent(ILogObserver, None))


class WorkerRecordTests(SynchronousTestCase):
    """A worker's event as one line on its stderr, and the master's event made from it."""

    def test_round_trip(self) -> None:
        scalars = {"cid": "CP1", "peer": "10.0.0.1:4000", "reason": "gone", "count": 3, "ratio": 0.5}
        scalars.update(flag=True, none=None)
        event = {
            "log_format": "charge point {cid} disconnected from {peer}: {reason}",
            **scalars,
            "thing": Thing(),
            "log_time": NOW,
            "log_level": LogLevel.warn,
            "log_namespace": "ocppgw.core.router.Router",
            "log_logger": object(),
        }
        line = worker_record(event)
        self.assertTrue(line.startswith(RECORD) and line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        relayed = relayed_event(line.rstrip("\n"), "box-w1", NOW + 5)
        assert relayed is not None
        self.assertEqual(formatEvent(relayed), "charge point CP1 disconnected from 10.0.0.1:4000: gone")
        self.assertEqual({k: relayed[k] for k in [*scalars, "worker"]}, {**scalars, "worker": "box-w1"})
        self.assertNotIn("thing", relayed)
        self.assertEqual(relayed["log_time"], NOW)
        self.assertIs(relayed["log_level"], LogLevel.warn)
        self.assertEqual(relayed["log_system"], "box-w1 ocppgw.core.router.Router#warn")
        self.assertEqual(
            classic_line(relayed),
            f"{formatTime(NOW)} [box-w1 ocppgw.core.router.Router#warn] "
            "charge point CP1 disconnected from 10.0.0.1:4000: gone\n",
        )

    def test_traceback_carried(self) -> None:
        relayed = relayed_event(worker_record(failure_event()).rstrip("\n"), "box-w2", NOW)
        assert relayed is not None
        self.assertIn("it failed: x", relayed["log_text"])
        self.assertIn("ValueError: boom", relayed["log_text"])
        self.assertIs(relayed["log_level"], LogLevel.info)

    def test_hostile_lines(self) -> None:
        """What is not a record is None (the master logs it as text); odd fields do not break the event."""
        for line in (RECORD + "{", RECORD + "[1,2]", RECORD + '"x"', RECORD):
            self.assertIsNone(relayed_event(line, "w", NOW))
        odd = RECORD + '{"t": "later", "l": "shout", "n": 5, "m": null, "f": {"log_format": "{x}", "x": 1}}'
        event = relayed_event(odd, "w", NOW)
        assert event is not None
        self.assertEqual((event["log_time"], event["log_level"]), (NOW, LogLevel.info))
        self.assertEqual((event["log_format"], event["x"], event["log_namespace"]), ("{log_text}", 1, "5"))
        self.assertEqual(formatEvent(event), "None")
        listed = relayed_event(RECORD + '{"f": [1]}', "w", NOW)
        assert listed is not None
        self.assertEqual(sorted(k for k in listed if not k.startswith("log_")), ["worker"])
