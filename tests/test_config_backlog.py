"""Tests for the ``backlog`` key of ws and wss listeners in gw.ini (the listen queue)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.config import ListenerSection, config_from_string
from tests.test_config import problems_of
from tests.test_config_proxy import WSS_FILES


class BacklogConfigTests(SynchronousTestCase):
    def test_default(self) -> None:
        """1024, EMQX's default, in ws and wss listeners unless set."""
        text = "[listeners.ws.a]\nbind = 1\n[listeners.wss.b]\nbind = 2\n" + WSS_FILES
        ws, wss = config_from_string(text, environ={}).listeners
        self.assertEqual((ws.backlog, wss.backlog, ListenerSection.backlog), (1024, 1024, 1024))

    def test_ws_and_wss(self) -> None:
        """Both listener kinds take the key; 1 and 65535 are the bounds."""
        text = (
            "[listeners.ws.a]\nbind = 1\nbacklog = 200\n[listeners.ws.b]\nbind = 2\nbacklog = 1\n"
            "[listeners.wss.c]\nbind = 3\nbacklog = 65535\n" + WSS_FILES
        )
        listeners = config_from_string(text, environ={}).listeners
        self.assertEqual(
            [(lis.kind, lis.backlog) for lis in listeners], [("ws", 200), ("ws", 1), ("wss", 65535)]
        )

    def test_bad_values(self) -> None:
        """Out of range or not an integer: one exact problem line, for ws and wss alike."""
        for section, value, reason in [
            ("listeners.ws.x", "0", "expected an integer from 1 to 65535, got '0'"),
            ("listeners.ws.x", "70000", "expected an integer from 1 to 65535, got '70000'"),
            ("listeners.wss.x", "x", "expected an integer, got 'x'"),
        ]:
            text = f"[{section}]\nbind = 1\nbacklog = {value}\n" + (WSS_FILES if "wss" in section else "")
            self.assertEqual(problems_of(self, text, environ={}), [f"gw.ini: [{section}] backlog: {reason}"])
