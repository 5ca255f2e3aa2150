"""``loadgen.py storm`` on bare non-blocking sockets and one epoll loop (plain ws:// only).

Why: on a 2-core machine the load generator shares the cores with the gateway it measures, and the
asyncio client (websockets' sans-I/O protocol, a task, a future and two ``wait_for`` timers per
attempt) took 0.6-0.7 of a core in a 10,000 storm, about 1 ms per reconnect: as much as the gateway
itself (bench/README.md, issue 12). Here a reconnect is a socket, a pre-built upgrade request, a
check of the 101 and its ``Sec-WebSocket-Accept``, one masked BootNotification frame and a look at
the reply's first bytes: the same wire traffic, for a fraction of the CPU.

Behaviour and JSON reports are those of the asyncio version (``loadgen.py``'s docstring): open
``--count`` connections at ``--rate`` with at most ``--concurrency`` in progress, each with its
BootNotification round trip; report; on SIGUSR1 drop them all at once and reconnect each after up
to ``--jitter`` s, retrying a failed attempt after 0.5-1.5 s until ``--storm-timeout``; report; hold
the connections (answering pings) until SIGTERM or ``--hold-seconds``. Server frames are expected
unfragmented (the gateway sends them so); anything else fails the attempt.
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import heapq
import json
import os
import random
import select
import signal
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Python 3.12 names it
ATTEMPT_TIMEOUT = 30.0  # s from the connect to the BootNotification reply
MAX_HEADER = 16384
CONNECTING, UPGRADING, BOOTING, OPEN = range(4)
READ = select.EPOLLIN | select.EPOLLRDHUP
WRITE = select.EPOLLOUT


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.2)."""
    size = len(payload)
    mask = os.urandom(4)
    keyed = (mask * (size // 4 + 1))[:size]
    body = (int.from_bytes(payload, "little") ^ int.from_bytes(keyed, "little")).to_bytes(size, "little")
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    else:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    return head + mask + body


def is_reply(payload: bytes, unique_id: str) -> bool:
    """A CallResult to ``unique_id`` (the gateway's compact JSON first, any JSON spacing after)."""
    if payload.startswith(f'[3,"{unique_id}",'.encode()):
        return True
    try:
        message = json.loads(payload)
    except ValueError:
        return False
    return isinstance(message, list) and message[:2] == [3, unique_id]


class Attempt:
    """One connection of one charge point, from the connect to the BootNotification reply and on."""

    __slots__ = ("accept", "buf", "cid", "deadline", "phase", "sock", "unique_id")

    def __init__(self, cid: str, sock: socket.socket, deadline: float) -> None:
        self.cid = cid
        self.sock = sock
        self.phase = CONNECTING
        self.buf = b""
        self.deadline = deadline
        self.unique_id = f"boot-{cid}-{time.monotonic_ns()}"
        self.accept = b""


class Storm:
    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.url)
        if url.scheme != "ws":
            raise ValueError("lean_storm speaks plain ws:// only")
        self.args = args
        self.address = (url.hostname or "127.0.0.1", url.port or 80)
        self.host = url.netloc.encode()
        self.path = url.path
        self.epoll = select.epoll()
        self.attempts: dict[int, Attempt] = {}  # fd -> attempt
        self.held: dict[str, Attempt] = {}  # cid -> its open connection
        self.timers: list[tuple[float, int, str]] = []  # (when, seq, cid): attempts to start
        self.seq = 0
        self.retrying = False  # storm phase: a failed attempt is tried again
        self.failures: dict[str, int] = {}
        self.retries = 0
        self.done: list[float] = []
        self.started = 0.0
        self.signalled = False
        self.stopping = False

    # -- attempts -----------------------------------------------------------------------------

    def later(self, when: float, cid: str) -> None:
        self.seq += 1
        heapq.heappush(self.timers, (when, self.seq, cid))

    def start(self, cid: str, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if self.args.source:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((self.args.source, 0))
        attempt = Attempt(cid, sock, now + ATTEMPT_TIMEOUT)
        self.attempts[sock.fileno()] = attempt
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            self.fail(attempt, errno.errorcode.get(code, str(code)))
            return
        self.epoll.register(sock.fileno(), WRITE | READ)

    def fail(self, attempt: Attempt, key: str) -> None:
        self.drop(attempt)
        self.failures[key] = self.failures.get(key, 0) + 1
        if self.retrying:
            self.retries += 1
            self.later(time.monotonic() + random.uniform(0.5, 1.5), attempt.cid)

    def drop(self, attempt: Attempt) -> None:
        fd = attempt.sock.fileno()
        if fd >= 0:
            self.attempts.pop(fd, None)
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass
        attempt.sock.close()

    def ready(self, attempt: Attempt) -> None:
        if attempt.phase == CONNECTING:
            code = attempt.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.fail(attempt, "ConnectionRefusedError" if code == errno.ECONNREFUSED else "OSError")
                return
            key = base64.b64encode(os.urandom(16))
            attempt.accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            request = (
                f"GET {self.path}{attempt.cid} HTTP/1.1\r\n".encode()
                + b"Host: " + self.host + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
                + b"Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
            )  # fmt: skip
            attempt.phase = UPGRADING
            self.epoll.modify(attempt.sock.fileno(), READ)
            self.send(attempt, request)
            return
        try:
            data = attempt.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self.lost(attempt, type(e).__name__)
            return
        if not data:
            self.lost(attempt, "ConnectionResetError")
            return
        attempt.buf += data
        if attempt.phase == UPGRADING:
            self.upgraded(attempt)
        if attempt.phase >= BOOTING and attempt.sock.fileno() >= 0:
            self.frames(attempt)

    def send(self, attempt: Attempt, data: bytes) -> None:
        try:
            sent = attempt.sock.send(data)
        except OSError as e:
            self.lost(attempt, type(e).__name__)
            return
        if sent != len(data):  # a few hundred bytes into an empty socket buffer: never short here
            self.lost(attempt, "ShortWrite")

    def lost(self, attempt: Attempt, key: str) -> None:
        if attempt.phase == OPEN:  # a held connection the gateway closed: not an attempt any more
            self.drop(attempt)
            if self.held.get(attempt.cid) is attempt:
                del self.held[attempt.cid]
            return
        self.fail(attempt, key)

    def upgraded(self, attempt: Attempt) -> None:
        end = attempt.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(attempt.buf) > MAX_HEADER:
                self.fail(attempt, "InvalidMessage")
            return
        head, attempt.buf = attempt.buf[:end].lower(), attempt.buf[end + 4 :]
        if not head.startswith(b"http/1.1 101 "):
            self.fail(attempt, "InvalidStatus")
            return
        if b"\r\nsec-websocket-accept: " + attempt.accept.lower() not in head:
            self.fail(attempt, "InvalidHeaderValue")
            return
        attempt.phase = BOOTING
        call = (
            f'[2,"{attempt.unique_id}","BootNotification",'
            '{"chargePointVendor":"bench","chargePointModel":"storm"}]'
        )
        self.send(attempt, frame(1, call.encode()))

    def frames(self, attempt: Attempt) -> None:
        buf = attempt.buf
        while len(buf) >= 2 and attempt.sock.fileno() >= 0:  # a failed send closes it
            first, second = buf[0], buf[1]
            size, offset = second & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, offset = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, offset = int.from_bytes(buf[2:10], "big"), 10
            if second & 0x80 or not first & 0x80:  # masked or fragmented: not what the gateway sends
                self.lost(attempt, "ProtocolError")
                return
            if len(buf) < offset + size:
                break
            payload, buf = buf[offset : offset + size], buf[offset + size :]
            opcode = first & 0x0F
            if opcode == 9:
                self.send(attempt, frame(10, payload))
            elif opcode == 8:
                self.lost(attempt, "ConnectionClosed")
                return
            elif opcode == 1 and attempt.phase == BOOTING:
                if not is_reply(payload, attempt.unique_id):
                    self.fail(attempt, "bad reply")
                    return
                self.booted(attempt)
        attempt.buf = buf

    def booted(self, attempt: Attempt) -> None:
        attempt.phase = OPEN
        self.held[attempt.cid] = attempt
        if self.retrying:
            self.done.append(time.monotonic() - self.started)

    # -- the loop -----------------------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self.attempts) - len(self.held)

    def turn(self, until: float, limit: int | None = None) -> None:
        """Start what is due (at most ``limit`` attempts in progress), then wait for sockets, at
        most until ``until`` or the next due attempt."""
        now = time.monotonic()
        timers = self.timers
        while timers and timers[0][0] <= now and (limit is None or self.in_flight() < limit):
            self.start(heapq.heappop(timers)[2], now)
        wait = until - now
        if timers and (limit is None or self.in_flight() < limit):
            wait = min(wait, timers[0][0] - now)
        for fd, _events in self.epoll.poll(max(0.0, min(wait, 0.1))):
            attempt = self.attempts.get(fd)
            if attempt is not None:
                self.ready(attempt)

    def expire(self) -> None:
        now = time.monotonic()
        for attempt in [a for a in self.attempts.values() if a.phase != OPEN and a.deadline <= now]:
            self.fail(attempt, "TimeoutError")

    def run(self) -> None:
        args = self.args
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "signalled", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        begin = time.monotonic()
        for n in range(args.count):
            self.later(begin + n / args.rate, f"{args.prefix}{args.first + n}")
        checked = begin
        while self.timers or self.in_flight():
            self.turn(begin + 3600, args.concurrency)
            if time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                self.expire()
        print(json.dumps({"opened": len(self.held), "failures": self.failures}), flush=True)
        while not self.signalled:
            self.turn(time.monotonic() + 0.1)
        self.storm()

    def storm(self) -> None:
        args = self.args
        self.started = started = time.monotonic()
        for attempt in list(self.held.values()):
            self.drop(attempt)
        cids = list(self.held)
        self.held.clear()
        self.failures, self.retrying = {}, True
        for cid in cids:
            self.later(started + random.uniform(0.0, args.jitter), cid)
        deadline = started + args.storm_timeout
        checked = started
        while (self.timers or self.in_flight()) and time.monotonic() < deadline:
            self.turn(deadline)
            if time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                self.expire()
        self.done.sort()
        report: dict[str, Any] = {
            "reconnected": len(self.done),
            "attempt_failures": self.failures,
            "retries": self.retries,
            "completion_s": [round(t, 3) for t in self.done],
            "signal_at": time.time() - (time.monotonic() - started),
        }
        print(json.dumps(report), flush=True)
        self.retrying = False
        self.timers.clear()
        hold_until = time.monotonic() + args.hold_seconds
        while not self.stopping and time.monotonic() < hold_until:
            self.turn(hold_until)
        sys.stdout.flush()
        os._exit(0)


def storm(args: argparse.Namespace) -> None:
    Storm(args).run()
