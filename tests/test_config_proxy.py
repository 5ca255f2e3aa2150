"""Tests for the PROXY protocol keys of ws and wss listeners in gw.ini."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.config import ListenerSection, config_from_string
from tests.test_config import problems_of

WSS_FILES = "certfile = server.pem\nkeyfile = server.key\n"


class ProxyProtocolConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """Off, with a 3s header deadline, unless set."""
        (listener,) = config_from_string("[listeners.ws.a]\nbind = 1\n", environ={}).listeners
        self.assertEqual((listener.proxy_protocol, listener.proxy_protocol_timeout), (False, 3.0))
        self.assertEqual(
            (ListenerSection.proxy_protocol, ListenerSection.proxy_protocol_timeout), (False, 3.0)
        )

    def test_ws_and_wss(self) -> None:
        """Both listener kinds take both keys."""
        text = (
            "[listeners.ws.a]\nbind = 1\nproxy_protocol = true\nproxy_protocol_timeout = 500ms\n"
            "[listeners.wss.b]\nbind = 2\nproxy_protocol = on\nproxy_protocol_timeout = 10s\n" + WSS_FILES
        )
        ws, wss = config_from_string(text, environ={}).listeners
        self.assertEqual((ws.kind, ws.proxy_protocol, ws.proxy_protocol_timeout), ("ws", True, 0.5))
        self.assertEqual((wss.kind, wss.proxy_protocol, wss.proxy_protocol_timeout), ("wss", True, 10.0))
        self.assertIsNotNone(wss.tls)

    def test_bad_values(self) -> None:
        """A value that is not a boolean, or not a positive duration, is one problem line each."""
        text = (
            "[listeners.ws.a]\nbind = 1\nproxy_protocol = maybe\nproxy_protocol_timeout = 0s\n"
            "[listeners.wss.b]\nbind = 2\nproxy_protocol_timeout = soon\n" + WSS_FILES
        )
        self.assertEqual(
            problems_of(self, text, environ={}),
            [
                "gw.ini: [listeners.ws.a] proxy_protocol: expected true or false, got 'maybe'",
                "gw.ini: [listeners.ws.a] proxy_protocol_timeout: must be greater than 0, got '0s'",
                "gw.ini: [listeners.wss.b] proxy_protocol_timeout: expected a duration such as 500ms, 30s, "
                "5m or 1h, got 'soon'",
            ],
        )
