"""Tests for ocppgw.listen_queue: the start-up warning when the kernel would cap a listen queue."""

from __future__ import annotations

from typing import Any

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ocppgw.config import config_from_string
from ocppgw.listen_queue import SOMAXCONN, capped_listeners, check_listen_queues, somaxconn

INI = "[listeners.ws.small]\nbind = 1\n\n[listeners.ws.big]\nbind = 2\nbacklog = 16384\n"


class ListenQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_reads_the_kernels_cap(self) -> None:
        """The real sysctl is a positive number on Linux; a file that is missing or not a number is
        None (the check then says nothing)."""
        cap = somaxconn()
        self.assertIsInstance(cap, int)
        assert cap is not None
        self.assertGreater(cap, 0)
        path = self.mktemp()
        self.assertIsNone(somaxconn(path))
        with open(path, "w") as f:
            f.write("lots\n")
        self.assertIsNone(somaxconn(path))
        with open(path, "w") as f:
            f.write("4096\n")
        self.assertEqual(somaxconn(path), 4096)
        self.assertEqual(SOMAXCONN, "/proc/sys/net/core/somaxconn")

    def test_one_line_per_capped_listener(self) -> None:
        """Only the listener whose backlog is above the cap is named, with section, key and both
        numbers."""
        config = config_from_string(INI)
        self.assertEqual(capped_listeners(config, 4096), ["listeners.ws.big"])
        (event,) = self.events
        self.assertEqual(
            formatEvent(event),
            "[listeners.ws.big] backlog = 16384, but the kernel caps listen queues at 4096 "
            "(net.core.somaxconn): raise that sysctl to 16384 for the whole queue",
        )
        self.assertEqual(capped_listeners(config, 16384), [])
        self.assertEqual(capped_listeners(config, None), [])
        self.assertEqual(len(self.events), 1)

    def test_start_up_check_reads_the_file(self) -> None:
        """``check_listen_queues`` compares with the file it is given."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("1000\n")
        config = config_from_string(INI)
        self.assertEqual(check_listen_queues(config, path), ["listeners.ws.small", "listeners.ws.big"])
        self.assertEqual(len(self.events), 2)
