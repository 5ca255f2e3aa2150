"""Charge point load generator: asyncio + websockets, one process, many connections.

Three modes, each run by the benchmark scripts as a subprocess:

``closed``  N charge points in a closed loop: each sends ``[2,id,"Heartbeat",{}]``
            and waits for the CallResult before sending the next one.  Calls that
            complete inside [t_start, t_end) (wall clock) are counted and their
            round-trip times recorded.  Writes JSON to ``--out``.  Built on
            websockets' sans-I/O protocol and asyncio callbacks (no task or future
            per call), so it costs the machine as little CPU as possible.
``idle``    opens connections at a bounded rate; each sends one BootNotification
            and waits for its CallResult, then stays open and silent.  Prints one
            JSON line to stdout when done, then holds the connections until
            SIGTERM or ``--hold-seconds``.
``handshakes``  opens ``--count`` connections, at most ``--concurrency`` at a time,
            each doing the opening handshake (TCP, TLS for wss://, WebSocket) and
            then the closing handshake.  Prints one JSON line: connect times
            (connection start to the 101 response), wall-clock start and end, and
            its own CPU time.  Sans-I/O protocol and asyncio callbacks, as ``closed``.

``storm``   opens connections as ``idle`` does (one BootNotification each), prints one JSON line,
            then on SIGUSR1 drops every connection at once (TCP abort: the network blip) and
            reconnects each after a random delay of up to ``--jitter`` seconds, retrying a refused
            or failed attempt after 0.5-1.5 s, until its BootNotification round trip is done.
            Prints one JSON line: completion times from the signal, failures, retries.  Then holds
            the connections until SIGTERM or ``--hold-seconds``.  For ws:// URLs this runs on bare
            sockets and epoll (``lean_storm.py``: a fraction of the CPU); ``--asyncio`` or wss://
            runs the asyncio client below.

``--source ADDRESS`` (idle, storm) binds the client sockets to that local address (127.0.0.2 ...),
for more connections than one address's ephemeral ports allow.

For wss:// URLs, ``--tls-version`` pins the TLS version, ``--cafile`` verifies
the server and ``--certfile``/``--keyfile`` present a client certificate.  No
TLS session is resumed: every connection makes a full handshake.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import ssl
import sys
import time
from time import perf_counter
from typing import IO, Any

from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import raise_nofile


def _connect(
    url: str, open_timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None, source: str | None = None
) -> Any:
    extra: dict[str, Any] = {"local_addr": (source, 0)} if source else {}
    return connect(
        url,
        ssl=ssl_context,
        subprotocols=["ocpp1.6"],
        compression=None,
        ping_interval=None,
        open_timeout=open_timeout,
        close_timeout=2,
        user_agent_header=None,
        **extra,
    )


def _is_reply(text: Any, unique_id: str) -> bool:
    if isinstance(text, str) and text.startswith(f'[3,"{unique_id}",'):
        return True
    try:
        frame = json.loads(text)
    except ValueError:
        return False
    return isinstance(frame, list) and len(frame) == 3 and frame[0] == 3 and frame[1] == unique_id


class _Client(asyncio.Protocol):
    """A WebSocket client connection on websockets' sans-I/O protocol, driven by asyncio callbacks:
    sends the opening handshake request as soon as the transport is up (for TLS, once the TLS
    handshake is done)."""

    def __init__(self, url: str) -> None:
        self.ws = ClientProtocol(parse_uri(url), subprotocols=[Subprotocol("ocpp1.6")])
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def _flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)


class _ClosedLoopCP(_Client):
    """One charge point in the closed loop, driven by callbacks: websockets' sans-I/O protocol does
    the handshake and the framing, and each CallResult that arrives sends the next Call at once, so
    no task, future or queue is involved per call."""

    def __init__(self, run: _ClosedLoop, index: int, url: str) -> None:
        super().__init__(url)
        self.run = run
        self.index = index
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seq = 0
        self.unique_id = ""
        self.sent_at = 0.0
        self.finished = False

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT:
                    self._reply(event.data.decode("utf-8"))
            elif isinstance(event, Response) and not self.opened.done():
                if ws.handshake_exc is not None:
                    self.opened.set_exception(ws.handshake_exc)
                else:
                    self.opened.set_result(None)
        self._flush()  # pongs, close frames

    def send_call(self) -> None:
        if perf_counter() >= self.run.end:
            self._finish()
            return
        self.unique_id = unique_id = f"{self.index}.{self.seq}"
        self.seq += 1
        self.sent_at = perf_counter()
        self.ws.send_text(f'[2,"{unique_id}","Heartbeat",{{}}]'.encode())
        self._flush()

    def _reply(self, text: str) -> None:
        now = perf_counter()
        run = self.run
        if not _is_reply(text, self.unique_id):
            run.errors["bad_reply"] += 1
        elif run.start <= now < run.end:
            run.samples.append(now - self.sent_at)
            run.sent_at.append(self.sent_at)
        if run.interval:
            asyncio.get_running_loop().call_later(run.interval, self.send_call)
        else:
            self.send_call()

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.run.finished(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("connection closed during the handshake"))
        elif not self.finished:
            self.run.errors["closed"] += 1
            print(f"loadgen: CP {self.index}: connection lost: {exc!r}", file=sys.stderr, flush=True)
            self._finish()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.ws.send_close(1000)
            self._flush()
            self.transport.close()


class _ClosedLoop:
    def __init__(self, start: float, end: float, interval: float = 0.0) -> None:
        self.start = start
        self.end = end
        self.interval = interval  # between a reply and the next Call; 0: at once (closed loop)
        self.samples: list[float] = []
        self.sent_at: list[float] = []  # perf_counter time each sample's Call was sent, in step with samples
        self.errors = {"connect": 0, "bad_reply": 0, "closed": 0}
        self.running = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finished(self, cp: _ClosedLoopCP) -> None:
        self.running -= 1
        if self.running == 0 and not self.done.done():
            self.done.set_result(None)


async def closed(args: argparse.Namespace) -> dict[str, Any]:
    offset = time.time() - perf_counter()
    run = _ClosedLoop(args.t_start - offset, args.t_end - offset, args.interval)  # perf_counter times
    loop = asyncio.get_running_loop()
    host, port = _host_port(args.url)

    async def open_one(index: int) -> _ClosedLoopCP | None:
        cid = f"{args.prefix}{index}"
        try:
            _transport, cp = await asyncio.wait_for(
                loop.create_connection(lambda: _ClosedLoopCP(run, index, args.url + cid), host, port), 30
            )
            await asyncio.wait_for(cp.opened, 30)
            return cp
        except Exception as e:
            run.errors["connect"] += 1
            print(f"loadgen: {cid}: connect failed: {e!r}", file=sys.stderr, flush=True)
            return None

    opened = await asyncio.gather(*(open_one(i) for i in range(args.first, args.first + args.count)))
    cps = [cp for cp in opened if cp is not None]
    connected_at = perf_counter()
    run.running = len(cps)
    for cp in cps:
        cp.send_call()
    if cps:
        try:
            await asyncio.wait_for(asyncio.shield(run.done), max(0.0, run.end - perf_counter()) + 10)
        except TimeoutError:
            run.errors["stuck"] = sum(1 for cp in cps if not cp.finished)
    for cp in cps:
        cp.close()
    await asyncio.sleep(0.2)
    return {
        "cps": args.count,
        "connected": len(cps),
        "connected_before_start": connected_at < run.start,
        "latencies_s": run.samples,
        "sent_at_s": [t + offset for t in run.sent_at],  # wall clock, for lining calls up with other events
        "errors": run.errors,
    }


def _host_port(url: str) -> tuple[str, int]:
    uri = parse_uri(url + "x")
    return uri.host, uri.port


async def _hold(seconds: float) -> None:
    """Keep the connections until SIGTERM or ``seconds``."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def idle(args: argparse.Namespace) -> None:
    held: list[Any] = []
    failures: dict[str, int] = {}
    slots = asyncio.Semaphore(args.concurrency)
    begin = time.monotonic()

    async def open_one(index: int) -> None:
        cid = f"{args.prefix}{index}"
        await asyncio.sleep(max(0.0, begin + (index - args.first) / args.rate - time.monotonic()))
        async with slots:
            try:
                ws = await _connect(args.url + cid, ssl_context=_ssl_context(args), source=args.source)
            except Exception as e:
                key = f"connect: {type(e).__name__}"
                failures[key] = failures.get(key, 0) + 1
                return
            unique_id = f"boot-{cid}"
            try:
                await ws.send(
                    f'[2,"{unique_id}","BootNotification",'
                    f'{{"chargePointVendor":"bench","chargePointModel":"idle"}}]'
                )
                reply = await asyncio.wait_for(ws.recv(), args.reply_timeout)
            except Exception as e:
                key = f"boot: {type(e).__name__}"
                failures[key] = failures.get(key, 0) + 1
                await ws.close()
                return
            if not _is_reply(reply, unique_id):
                failures["boot: bad reply"] = failures.get("boot: bad reply", 0) + 1
            held.append(ws)

    await asyncio.gather(*(open_one(i) for i in range(args.first, args.first + args.count)))
    elapsed = time.monotonic() - begin
    print(json.dumps({"opened": len(held), "failures": failures, "seconds": round(elapsed, 2)}), flush=True)
    await _hold(args.hold_seconds)
    still_open = sum(1 for ws in held if ws.close_code is None)
    print(f"loadgen: {still_open} of {len(held)} connections still open at exit", file=sys.stderr, flush=True)
    # Let the kernel close the sockets: a clean close of thousands of connections adds nothing here.
    sys.stdout.flush()
    os._exit(0)


class _BootCP(_Client):
    """One charge point of the storm: the opening handshake and one BootNotification round trip on
    websockets' sans-I/O protocol and asyncio callbacks, then held open (pings are answered). Its
    asyncio client costs several times the CPU per connection, which on a small machine is taken
    from the gateway the storm measures."""

    def __init__(self, url: str, unique_id: str) -> None:
        super().__init__(url)
        self.unique_id = unique_id
        self.booted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Response):
                if ws.handshake_exc is not None:
                    self._failed(ws.handshake_exc)
                else:
                    ws.send_text(
                        f'[2,"{self.unique_id}","BootNotification",'
                        '{"chargePointVendor":"bench","chargePointModel":"storm"}]'.encode()
                    )
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT and not self.booted.done():
                if _is_reply(event.data.decode("utf-8"), self.unique_id):
                    self.booted.set_result(None)
                else:
                    self._failed(ValueError("bad reply"))
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._failed(exc or ConnectionResetError("closed before the BootNotification reply"))

    def _failed(self, exc: BaseException) -> None:
        if not self.booted.done():
            self.booted.set_exception(exc)
            self.transport.abort()


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2; Python 3.12 names it


async def _from_source(loop: asyncio.AbstractEventLoop, source: str, host: str, port: int) -> socket.socket:
    """A socket connected from ``source``, its port picked at connect time: asyncio's ``local_addr``
    binds first, and a bind to port 0 searches the bound ports one by one (in a storm of thousands
    that search took the load generator's whole core while the gateway sat idle)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _booted(args: argparse.Namespace, cid: str) -> _BootCP:
    """A new connection of ``cid`` whose BootNotification round trip is done (raises otherwise)."""
    loop = asyncio.get_running_loop()
    host, port = _host_port(args.url)
    context = _ssl_context(args)
    extra: dict[str, Any] = {"server_hostname": host} if context is not None else {}
    unique_id = f"boot-{cid}-{time.monotonic_ns()}"

    async def connected() -> tuple[Any, _BootCP]:
        if not args.source:
            return await loop.create_connection(
                lambda: _BootCP(args.url + cid, unique_id), host, port, ssl=context, **extra
            )
        sock = await _from_source(loop, args.source, host, port)
        return await loop.create_connection(
            lambda: _BootCP(args.url + cid, unique_id), sock=sock, ssl=context, **extra
        )

    _, cp = await asyncio.wait_for(connected(), 30.0)
    try:
        await asyncio.wait_for(cp.booted, args.reply_timeout)
    except BaseException:
        cp.transport.abort()
        raise
    return cp


async def storm(args: argparse.Namespace) -> None:
    import random

    held: dict[str, Any] = {}
    failures: dict[str, int] = {}
    slots = asyncio.Semaphore(args.concurrency)
    begin = time.monotonic()
    cids = [f"{args.prefix}{i}" for i in range(args.first, args.first + args.count)]

    async def open_one(n: int, cid: str) -> None:
        await asyncio.sleep(max(0.0, begin + n / args.rate - time.monotonic()))
        async with slots:
            try:
                held[cid] = await _booted(args, cid)
            except Exception as e:
                key = f"open: {type(e).__name__}"
                failures[key] = failures.get(key, 0) + 1

    await asyncio.gather(*(open_one(n, cid) for n, cid in enumerate(cids)))
    print(json.dumps({"opened": len(held), "failures": failures}), flush=True)
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    await go.wait()
    started = time.monotonic()
    for ws in held.values():
        ws.transport.abort()
    done: list[float] = []
    storm_failures: dict[str, int] = {}
    retries = 0
    deadline = started + args.storm_timeout

    async def again(cid: str) -> None:
        nonlocal retries
        await asyncio.sleep(random.uniform(0.0, args.jitter))
        while time.monotonic() < deadline:
            try:
                held[cid] = await _booted(args, cid)
            except Exception as e:
                key = type(e).__name__
                storm_failures[key] = storm_failures.get(key, 0) + 1
                retries += 1
                await asyncio.sleep(random.uniform(0.5, 1.5))
                continue
            done.append(time.monotonic() - started)
            return

    await asyncio.gather(*(again(cid) for cid in list(held)))
    done.sort()
    print(
        json.dumps(
            {
                "reconnected": len(done),
                "attempt_failures": storm_failures,
                "retries": retries,
                "completion_s": [round(t, 3) for t in done],
                "signal_at": time.time() - (time.monotonic() - started),
            }
        ),
        flush=True,
    )
    await _hold(args.hold_seconds)
    sys.stdout.flush()
    os._exit(0)


class _HandshakeCP(_Client):
    """One connection of ``handshakes``: the opening handshake, then at once the closing one.
    ``answers``, when given, gets a line per answer to the opening handshake: its wall-clock time and
    its HTTP status."""

    def __init__(self, url: str, answers: IO[str] | None = None) -> None:
        super().__init__(url)
        self.answers = answers
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[float] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        done = False
        for event in ws.events_received():
            if isinstance(event, Response) and not self.opened.done():
                if self.answers is not None:
                    self.answers.write(f"{time.time():.6f} {event.status_code}\n")
                if ws.handshake_exc is not None:
                    self.opened.set_exception(ws.handshake_exc)
                    done = True
                else:
                    self.opened.set_result(perf_counter())
                    ws.send_close(1000)
            elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                done = True  # the server's close frame ends the closing handshake
        self._flush()
        if done:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("connection closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


async def handshakes(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host, port = _host_port(args.url)
    context = _ssl_context(args)
    tls: dict[str, Any] = {"ssl": context, "server_hostname": host} if context is not None else {}
    slots = asyncio.Semaphore(args.concurrency)
    answers = open(args.answers_out, "a", buffering=1, encoding="utf-8") if args.answers_out else None
    connect_s: list[float] = []
    failures: dict[str, int] = {}

    def failed(key: str) -> None:
        failures[key] = failures.get(key, 0) + 1

    async def one(index: int) -> None:
        url = f"{args.url}{args.prefix}{index}"
        async with slots:
            started = perf_counter()
            try:
                made = loop.create_connection(lambda: _HandshakeCP(url, answers), host, port, **tls)
                transport, cp = await asyncio.wait_for(made, args.reply_timeout)
            except Exception as e:
                failed(f"connect: {type(e).__name__}")
                return
            try:
                connect_s.append(
                    await asyncio.wait_for(asyncio.shield(cp.opened), args.reply_timeout) - started
                )
            except Exception as e:
                failed(f"handshake: {type(e).__name__}")
                transport.abort()
                return
            try:
                await asyncio.wait_for(asyncio.shield(cp.closed), args.reply_timeout)
            except TimeoutError:
                failed("close: TimeoutError")
                transport.abort()

    usage = resource.getrusage(resource.RUSAGE_SELF)
    began = time.time()
    await asyncio.gather(*(one(i) for i in range(args.first, args.first + args.count)))
    ended = time.time()
    if answers is not None:
        answers.close()
    used = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "handshakes": len(connect_s),
        "failures": failures,
        "connect_s": connect_s,
        "t_begin": began,
        "t_end": ended,
        "cpu_s": used.ru_utime + used.ru_stime - usage.ru_utime - usage.ru_stime,
    }


_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """For a wss:// URL, the client's TLS context (one per process); None for ws://."""
    if not args.url.startswith("wss://"):
        return None
    key = (args.tls_version, args.cafile, args.certfile, args.keyfile)
    if key not in _contexts:
        context = ssl.create_default_context(cafile=args.cafile)
        context.minimum_version = context.maximum_version = _TLS_VERSIONS[args.tls_version]
        if args.certfile:
            context.load_cert_chain(args.certfile, args.keyfile)
        _contexts[key] = context
    return _contexts[key]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("closed", "idle", "handshakes", "storm"))
    parser.add_argument("--url", required=True, help="WebSocket URL up to the charge point id")
    parser.add_argument("--prefix", default="cp", help="charge point ids are <prefix><n>")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--t-start", type=float, help="closed: wall-clock start of the measured window")
    parser.add_argument("--t-end", type=float, help="closed: wall-clock end of the measured window")
    parser.add_argument("--out", help="closed: write the result JSON here")
    parser.add_argument(
        "--interval", type=float, default=0.0, help="closed: seconds from a reply to the next Call (0: none)"
    )
    parser.add_argument("--rate", type=float, default=500.0, help="idle: connections opened per second")
    parser.add_argument(
        "--concurrency", type=int, default=100, help="idle, handshakes: handshakes in progress at most"
    )
    parser.add_argument("--reply-timeout", type=float, default=30.0)
    parser.add_argument(
        "--answers-out", help="handshakes: append each answer's wall-clock time and status here, as it comes"
    )
    parser.add_argument(
        "--tls-version", choices=sorted(_TLS_VERSIONS), default="1.3", help="wss: TLS version"
    )
    parser.add_argument("--cafile", help="wss: CA certificate that signs the server's")
    parser.add_argument("--certfile", help="wss: client certificate to present")
    parser.add_argument("--keyfile", help="wss: its private key")
    parser.add_argument("--hold-seconds", type=float, default=300.0)
    parser.add_argument("--source", help="idle, storm: local address of the client sockets")
    parser.add_argument("--jitter", type=float, default=1.0, help="storm: reconnect delay up to this, s")
    parser.add_argument("--storm-timeout", type=float, default=120.0, help="storm: give up after this, s")
    parser.add_argument(
        "--asyncio", action="store_true", help="storm: the asyncio client (ws:// storms use lean_storm.py)"
    )
    args = parser.parse_args()
    raise_nofile()
    if args.mode == "closed":
        result = asyncio.run(closed(args))
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f)
    elif args.mode == "handshakes":
        print(json.dumps(asyncio.run(handshakes(args))), flush=True)
    elif args.mode == "storm" and args.url.startswith("ws://") and not args.asyncio:
        import lean_storm

        lean_storm.storm(args)
    elif args.mode == "storm":
        asyncio.run(storm(args))
    else:
        asyncio.run(idle(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
