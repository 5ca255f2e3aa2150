"""A minimal central system on MQTT: answers every Call published on ``<mountpoint>cp/+``.

It publishes ``{"MessageTypeId":3,"UniqueId":...,"Payload":{...}}`` to
``<mountpoint>cs/<cid>``: ``currentTime`` for every Call, plus ``status`` and
``interval`` for a BootNotification.  Prints ``ready`` once subscribed, exits
on SIGTERM or after ``--max-seconds``, and prints a JSON summary to stderr.
If the broker closes the connection, it says so on stderr and exits with 1.

It is its own MQTT 3.1.1 client on an asyncio protocol (clean session,
keepalive 60 s, QoS 0, 1 and 2), with no thread and no object per message, so
that it takes little CPU from the gateway it is measured beside: everything
read in one go is parsed in place and the replies to it leave in one write.

    python bench/responder.py --port 1883 [--qos 1] [--mountpoint ocpp/]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from typing import cast

KEEPALIVE = 60
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
_PUBLISH_HEADER = {0: b"\x30", 1: b"\x32", 2: b"\x34"}
_SHORT_LENGTH = [bytes((n,)) for n in range(128)]
_BOOT_TAIL = '","interval":{},"status":"Accepted"}}}}'


class _Fatal(Exception):
    """The connection cannot go on; the message says why."""


def _remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of a packet's remaining length."""
    if n < 128:
        return _SHORT_LENGTH[n]
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _parse_length(data: bytes, j: int, n: int) -> tuple[int, int]:
    """(remaining length, offset after it) read from ``data[j:n]``; (-1, 0) if it is not all there yet."""
    value = shift = 0
    while j < n:
        byte = data[j]
        value |= (byte & 0x7F) << shift
        j += 1
        if byte < 0x80:
            return value, j
        shift += 7
        if shift > 21:
            raise _Fatal("malformed remaining length from the broker")
    return -1, 0


def _string(raw: bytes) -> bytes:
    return len(raw).to_bytes(2, "big") + raw


class Responder(asyncio.Protocol):
    def __init__(self, args: argparse.Namespace, done: asyncio.Future) -> None:
        self.where = f"{args.host}:{args.port}"
        self.done = done
        self.qos = args.qos
        self.quickack = args.quickack
        self.up_prefix = (args.mountpoint + "cp/").encode()
        self.down_prefix = (args.mountpoint + "cs/").encode()
        self.boot_tail = _BOOT_TAIL.format(args.boot_interval)
        self.client_id = f"bench-responder-{os.getpid()}".encode()
        self.stats = {"received": 0, "answered": 0, "ignored": 0}
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.inflight: set[int] = set()  # our SUBSCRIBE and QoS 1/2 PUBLISHes not yet acknowledged
        self.qos2_in: set[int] = set()  # the broker's QoS 2 PUBLISHes (answered) awaiting PUBREL
        self.last_id = 0
        self.ready = False
        self.closing = False
        self.last_write = 0.0  # loop time of the last packet sent
        self.ping_sent: float | None = None  # loop time of a PINGREQ not yet answered
        self.keepalive_timer: asyncio.TimerHandle | None = None
        self.pending: list[bytes] = []  # the start of a packet not yet complete
        self.pending_size = 0
        self.pending_need = 0
        self.now_ms = -1
        self.now = ""
        self.encode = json.JSONEncoder(separators=(",", ":")).encode

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one without the subclass
        sock = transport.get_extra_info("socket")
        self.quickack_socket = sock if self.quickack and sock is not None else None
        variable = _string(b"MQTT") + b"\x04\x02" + KEEPALIVE.to_bytes(2, "big")  # level 4, clean session
        body = variable + _string(self.client_id)
        self._send(b"\x10" + _remaining_length(len(body)) + body)
        self.keepalive_timer = self.loop.call_later(KEEPALIVE / 2, self._keepalive)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.keepalive_timer is not None:
            self.keepalive_timer.cancel()
        if self.done.done():
            return
        if self.closing:
            self.done.set_result(0)
            return
        why = f": {exc}" if exc else ""
        print(
            f"responder: the broker at {self.where} closed the connection{why}", file=sys.stderr, flush=True
        )
        self.done.set_result(1)

    def stop(self) -> None:
        """Disconnect cleanly (SIGTERM, SIGINT, --max-seconds)."""
        if self.closing or self.transport is None or self.done.done():
            return
        self.closing = True
        self.transport.write(_DISCONNECT)
        self.transport.close()
        self.loop.call_later(5, self.transport.abort)  # if the broker stops reading

    def _fail(self, message: str) -> None:
        if not self.done.done():
            print(f"responder: {message} (broker {self.where})", file=sys.stderr, flush=True)
            self.done.set_result(1)
        if self.transport is not None:
            self.transport.abort()

    def _send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        self.last_write = self.loop.time()

    def _keepalive(self) -> None:
        """Sends PINGREQ after KEEPALIVE / 2 seconds without sending anything; fails if unanswered as long."""
        now = self.loop.time()
        if self.ping_sent is not None and now - self.ping_sent >= KEEPALIVE / 2 - 0.01:
            self._fail(f"no PINGRESP within {KEEPALIVE // 2} s")
            return
        due = self.last_write + KEEPALIVE / 2
        if now >= due - 0.01:
            self._send(_PINGREQ)
            if self.ping_sent is None:
                self.ping_sent = now
            due = now + KEEPALIVE / 2
        self.keepalive_timer = self.loop.call_at(due, self._keepalive)

    def _packet_id(self) -> int:
        """The next packet id in 1..65535 (wrapping) that is not in flight; marks it in flight."""
        inflight = self.inflight
        if len(inflight) >= 65535:
            raise _Fatal("all 65535 packet ids are in flight")
        pid = self.last_id
        while True:
            pid = pid % 65535 + 1
            if pid not in inflight:
                break
        self.last_id = pid
        inflight.add(pid)
        return pid

    # -- incoming bytes -----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.quickack_socket is not None:  # as a central system could: see --quickack
            self.quickack_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        if self.pending:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size < self.pending_need:
                return
            data = b"".join(self.pending)
            self.pending.clear()
        out: list[bytes] = []
        try:
            self._parse(data, out)
        except _Fatal as exc:
            self._fail(str(exc))
            return
        if out:
            self._send(b"".join(out))

    def _parse(self, data: bytes, out: list[bytes]) -> None:
        """Handles every complete packet in ``data``, appending what to send to ``out``; keeps the rest."""
        n = len(data)
        i = 0
        while n - i >= 2:
            header = data[i]
            length = data[i + 1]
            if length < 0x80:
                j = i + 2
            else:
                length, j = _parse_length(data, i + 1, n)
                if length < 0:
                    self._keep(data, i, n - i + 1)
                    return
            end = j + length
            if end > n:
                self._keep(data, i, end - i)
                return
            if header >> 4 == 3:
                self._publish(data, header, j, end, out)
            else:
                self._control(header, data[j:end], out)
            i = end
        if i < n:
            self._keep(data, i, 2)

    def _keep(self, data: bytes, start: int, need: int) -> None:
        """Keeps ``data[start:]``, the start of a packet, until ``need`` bytes of it have arrived."""
        self.pending.append(data[start:])
        self.pending_size = len(data) - start
        self.pending_need = need

    def _publish(self, data: bytes, header: int, j: int, end: int, out: list[bytes]) -> None:
        topic_end = j + 2 + ((data[j] << 8) | data[j + 1])
        topic = data[j + 2 : topic_end]
        qos = (header >> 1) & 3
        if qos:
            pid = data[topic_end : topic_end + 2]
            topic_end += 2
            if qos == 1:
                out.append(b"\x40\x02" + pid)
            else:
                out.append(b"\x50\x02" + pid)  # PUBREC; the Call is answered now, once
                number = int.from_bytes(pid, "big")
                if number in self.qos2_in:
                    return
                self.qos2_in.add(number)
        self._answer(topic, data[topic_end:end], out)

    def _answer(self, topic: bytes, payload: bytes, out: list[bytes]) -> None:
        stats = self.stats
        stats["received"] += 1
        try:
            body = json.loads(payload)
            if body.get("MessageTypeId") != 2:
                stats["ignored"] += 1
                return
            unique_id = body["UniqueId"]
            action = body.get("Action")
        except (ValueError, KeyError, AttributeError):
            stats["ignored"] += 1
            return
        # The bytes json.dumps(reply, separators=(",", ":")) gives for the reply dict, built directly.
        reply = (
            '{"MessageTypeId":3,"UniqueId":'
            + self.encode(unique_id)
            + ',"Payload":{"currentTime":"'
            + self._now()
            + (self.boot_tail if action == "BootNotification" else '"}}')
        ).encode()
        down = self.down_prefix + topic[len(self.up_prefix) :]
        qos = self.qos
        if qos:
            size = 4 + len(down) + len(reply)
            pid = self._packet_id().to_bytes(2, "big")
        else:
            size = 2 + len(down) + len(reply)
            pid = b""
        out.append(
            _PUBLISH_HEADER[qos] + _remaining_length(size) + len(down).to_bytes(2, "big") + down + pid + reply
        )
        stats["answered"] += 1

    def _now(self) -> str:
        """datetime.now(UTC) as ISO 8601 with milliseconds and Z, formatted once per millisecond."""
        ms = int(time.time() * 1000)
        if ms != self.now_ms:
            stamp = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
            self.now = stamp.replace("+00:00", "Z")
            self.now_ms = ms
        return self.now

    def _control(self, header: int, body: bytes, out: list[bytes]) -> None:
        kind = header >> 4
        if kind == 4 or kind == 7:  # PUBACK, PUBCOMP: our publish is done
            self.inflight.discard(int.from_bytes(body[:2], "big"))
        elif kind == 5:  # PUBREC
            out.append(b"\x62\x02" + body[:2])  # PUBREL
        elif kind == 6:  # PUBREL
            self.qos2_in.discard(int.from_bytes(body[:2], "big"))
            out.append(b"\x70\x02" + body[:2])  # PUBCOMP
        elif kind == 13:  # PINGRESP
            self.ping_sent = None
        elif kind == 2:  # CONNACK
            if len(body) < 2 or body[1] != 0:
                code = body[1] if len(body) >= 2 else "missing"
                raise _Fatal(f"the broker refused the connection (CONNACK return code {code})")
            pid = self._packet_id()
            payload = _string(self.up_prefix + b"+") + bytes((self.qos,))
            out.append(b"\x82" + _remaining_length(2 + len(payload)) + pid.to_bytes(2, "big") + payload)
        elif kind == 9:  # SUBACK
            self.inflight.discard(int.from_bytes(body[:2], "big"))
            if len(body) < 3 or body[2] == 0x80:
                raise _Fatal("the broker refused the subscription")
            if not self.ready:
                self.ready = True
                print("ready", flush=True)
        else:
            raise _Fatal(f"unexpected MQTT packet type {kind} from the broker")


async def _run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    protocol = Responder(args, done)
    try:
        await asyncio.wait_for(loop.create_connection(lambda: protocol, args.host, args.port), 15)
    except (OSError, TimeoutError) as exc:
        print(f"responder: cannot connect to the broker at {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, protocol.stop)
    loop.call_later(args.max_seconds, protocol.stop)
    status = await done
    print(json.dumps(protocol.stats), file=sys.stderr, flush=True)
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--qos", type=int, default=1, choices=(0, 1, 2))
    parser.add_argument("--mountpoint", default="ocpp/")
    parser.add_argument("--boot-interval", type=int, default=3600)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument(
        "--quickack",
        action="store_true",
        help="set TCP_QUICKACK on each read (Linux): no delayed ACK for a broker with Nagle on to wait for",
    )
    args = parser.parse_args()
    try:
        import uvloop  # only if already installed; this benchmark does not install it
    except ImportError:
        return asyncio.run(_run(args))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
