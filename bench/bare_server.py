"""The baseline: a bare Twisted + Autobahn WebSocket server answering each OCPP Call itself.

Same stack as the gateway (Twisted's default reactor, Autobahn's
``WebSocketServerProtocol``, subprotocol ``ocpp1.6``, the gateway's default
ping settings), none of its work: each ``[2,id,action,payload]`` frame is
parsed and answered at once with ``[3,id,{"currentTime":...}]``.  Prints
``ready <port>`` once listening; stops on SIGTERM or after ``--max-seconds``.

    python bench/bare_server.py --port 0
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny


class BareProtocol(WebSocketServerProtocol):
    def onConnect(self, request):
        if "ocpp1.6" not in request.protocols:
            raise ConnectionDeny(400, "subprotocol ocpp1.6 required")
        return "ocpp1.6"

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        frame = json.loads(payload)
        if frame[0] != 2:
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.sendMessage(json.dumps([3, frame[1], {"currentTime": now}], separators=(",", ":")).encode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()

    from twisted.internet import reactor

    factory = WebSocketServerFactory(protocols=["ocpp1.6"], server="bare")
    factory.protocol = BareProtocol
    factory.setProtocolOptions(autoPingInterval=30, autoPingTimeout=10, autoPingSize=12)
    port = reactor.listenTCP(args.port, factory, interface="127.0.0.1")
    print(f"ready {port.getHost().port}", flush=True)
    reactor.callLater(args.max_seconds, reactor.stop)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
