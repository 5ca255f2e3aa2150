"""Helpers shared by the tests: polling with a deadline, a private Mosquitto, an MQTT recorder,
and a memory reactor whose ``callFromThread`` queue the test drains by hand.

Nothing here sleeps on wall-clock time in the reactor thread: waiting is polling with
``reactor.callLater`` until a bounded deadline.
"""

from __future__ import annotations

import atexit
import collections
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from paho.mqtt import client as mqtt
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

MOSQUITTO = "/usr/sbin/mosquitto"


class PollTimeout(Exception):
    """A polled condition did not become true before its deadline."""


def _describe(predicate: Callable[[], Any]) -> str:
    name = getattr(predicate, "__qualname__", None) or repr(predicate)
    code = getattr(predicate, "__code__", None)
    if code is not None:
        name = f"{name} ({os.path.basename(code.co_filename)}:{code.co_firstlineno})"
    return name


def poll_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    reactor: Any = None,
    description: str | None = None,
) -> Deferred[Any]:
    """A Deferred that fires with ``predicate()``'s first true value, checked now and then every
    ``interval`` seconds of ``reactor`` time.

    It errbacks with ``PollTimeout`` once ``timeout`` seconds have passed, and with the exception
    if ``predicate`` raises.  Cancelling it stops the polling.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    what = description or _describe(predicate)
    deadline = reactor.seconds() + timeout
    pending: list[Any] = []

    def cancel(_d: Deferred[Any]) -> None:
        if pending and pending[0].active():
            pending[0].cancel()

    d: Deferred[Any] = Deferred(cancel)

    def check() -> None:
        pending.clear()
        try:
            value = predicate()
        except BaseException as e:
            d.errback(e)
            return
        if value:
            d.callback(value)
        elif reactor.seconds() >= deadline:
            d.errback(PollTimeout(f"condition not met within {timeout}s: {what}"))
        else:
            pending.append(reactor.callLater(interval, check))

    check()
    return d


_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=4096)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago, and not one of the last 4096
    this process handed out: the kernel can pick a port it just gave, and a test that takes several
    before binding any (a NATS node's client, route and MQTT ports) then had two the same."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.append(port)
            return port


def held_reuseport_port(case: Any) -> int:
    """A loopback port another socket listens on with SO_REUSEPORT set (closed at ``case``'s cleanup):
    binding it must still fail for the gateway."""
    holder = socket.socket()
    case.addCleanup(holder.close)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder.getsockname()[1]


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connection to ``host:port`` succeeds now (loopback: answers at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


# -- private brokers ---------------------------------------------------------

_live_brokers: set[PrivateBroker] = set()  # running, or holding files


@atexit.register
def _kill_leftover_brokers() -> None:
    for broker in list(_live_brokers):
        broker.kill()


class PrivateBroker:
    """A broker process of the test's own on 127.0.0.1 and a free MQTT port, which stays the same
    across restarts; its files live in a temporary directory until ``close()``.

    Subclasses write their configuration in ``_command`` and say whether ``stop()`` keeps the
    files (``persistence``).  With ``testcase`` the broker is closed in its cleanup; a broker still
    running when the interpreter exits is killed.  Tests reach it through ``host``, ``port`` and
    ``mqtt_options`` (more ``[mqtt]`` keys of gw.ini: none for Mosquitto).
    """

    name = "broker"
    host = "127.0.0.1"
    namespace = ""
    """Prefix of every topic a test uses on this broker: empty, the broker is the test's own."""
    restartable = True
    """``stop()``, ``start()``, ``crash()``, ``freeze()`` and ``thaw()`` act on the process."""

    def __init__(
        self, testcase: Any = None, persistence: bool = False, port: int | None = None, reactor: Any = None
    ) -> None:
        self.port = port if port is not None else free_port()
        self.persistence = persistence
        self._reactor = reactor
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: str | None = None
        if testcase is not None:
            testcase.addCleanup(self.close)

    @property
    def mqtt_options(self) -> dict[str, str]:
        return {}

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> str | None:
        return None if self._directory is None else os.path.join(self._directory, f"{self.name}.log")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the broker wrote, for error messages."""
        path = self.log_path
        if path is None or not os.path.exists(path):
            return ""
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def _command(self, directory: str) -> list[str]:
        """Write the configuration into ``directory``; the command line that runs the broker."""
        raise NotImplementedError

    def _ports(self) -> list[int]:
        """Every port that must accept connections before the broker counts as started."""
        return [self.port]

    def start(self, timeout: float = 10.0) -> Deferred[None]:
        """Start the broker; fires once its ports accept connections."""
        if self.running:
            return succeed(None)
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix=f"ocppgw-{self.name}-")
        command = self._command(self._directory)
        assert self.log_path is not None
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is not meant for it
            )
        _live_brokers.add(self)
        process = self._process

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {process.returncode} on port {self.port}:\n"
                    + self.log_tail()
                )
            return all(port_accepts(port) for port in self._ports())

        return poll_until(
            up, timeout=timeout, reactor=self._reactor, description=f"{self.name} listening on {self.port}"
        ).addCallback(lambda _: None)

    def _terminate(self, timeout: float, signum: int = signal.SIGTERM) -> Deferred[None]:
        """Send ``signum`` (SIGTERM: the broker saves its state and exits), SIGKILL if it lingers;
        fires once the process is gone and the port refuses connections."""
        process = self._process
        if process is None or process.poll() is not None:
            return succeed(None)
        process.send_signal(signum)
        if signum != signal.SIGKILL:
            process.send_signal(signal.SIGCONT)  # a frozen broker must run to handle it
        d = poll_until(
            lambda: process.poll() is not None,
            timeout=timeout,
            reactor=self._reactor,
            description=f"{self.name} on port {self.port} to exit",
        )

        def kill(failure: Any) -> Any:
            process.kill()
            process.wait()
            return failure

        d.addErrback(kill)
        d.addCallback(
            lambda _: poll_until(
                lambda: not port_accepts(self.port),
                timeout=timeout,
                reactor=self._reactor,
                description=f"port {self.port} to refuse connections",
            )
        )
        d.addCallback(lambda _: None)
        return d

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is read, answered or acknowledged."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def crash(self, timeout: float = 10.0) -> Deferred[None]:
        """SIGKILL: no clean shutdown; files stay for the next ``start()``."""
        return self._terminate(timeout, signal.SIGKILL)

    def stop(self, timeout: float = 10.0) -> Deferred[None]:
        """Stop the broker; fires once the port refuses connections.  ``start()`` may follow.

        Without persistence its files go too; with it they stay for the next ``start()`` until
        ``close()``.
        """
        d = self._terminate(timeout)
        if self.persistence:
            d.addCallback(self._check_saved)
        else:
            d.addBoth(self._remove_files)
        return d

    def _check_saved(self, result: Any) -> Any:
        return result

    def close(self, timeout: float = 10.0) -> Deferred[None]:
        """Stop the broker and remove all its files, persisted state included."""
        return self._terminate(timeout).addBoth(self._remove_files)

    def _remove_files(self, result: Any = None) -> Any:
        _live_brokers.discard(self)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
        return result

    def restart(self, timeout: float = 10.0) -> Deferred[None]:
        """Stop and start again on the same port, keeping persisted state."""
        d = self._terminate(timeout)
        if self.persistence:
            d.addCallback(self._check_saved)
        d.addCallback(lambda _: self.start(timeout))
        return d

    def kill(self) -> None:
        """Kill the process at once (no clean shutdown) and remove its files; the exit hook's last resort."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._remove_files()


class MosquittoBroker(PrivateBroker):
    """A private ``mosquitto``.

    ``persistence=True`` keeps sessions, subscriptions, retained and queued QoS>0 messages across
    ``stop()``/``start()`` and ``restart()`` (mosquitto saves them on SIGTERM).

    ``tls`` adds a TLS listener on ``tls_port``: mosquitto's ``cafile``, ``certfile``, ``keyfile``
    and optionally ``require_certificate`` (``"true"``), as a dict of those keys. ``settings`` are
    more lines of mosquitto.conf (``max_queued_messages 20000``).
    """

    name = "mosquitto"

    def __init__(
        self,
        testcase: Any = None,
        persistence: bool = False,
        port: int | None = None,
        reactor: Any = None,
        tls: dict[str, Any] | None = None,
        settings: tuple[str, ...] = (),
    ) -> None:
        super().__init__(testcase, persistence, port, reactor)
        self.settings = settings
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None

    def _ports(self) -> list[int]:
        return [self.port] if self.tls_port is None else [self.port, self.tls_port]

    def _command(self, directory: str) -> list[str]:
        conf = os.path.join(directory, "mosquitto.conf")
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            # as root mosquitto would switch to the user "mosquitto", who cannot write our temp dir
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            *self.settings,
        ]
        if self.persistence:
            lines.append(f"persistence_location {directory}{os.sep}")
        if self.tls is not None:
            lines.append(f"listener {self.tls_port} 127.0.0.1")
            lines.extend(f"{key} {value}" for key, value in self.tls.items())
        with open(conf, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        return [MOSQUITTO, "-c", conf]

    def _db_stamp(self) -> tuple[int, int] | None:
        assert self._directory is not None
        try:
            st = os.stat(os.path.join(self._directory, "mosquitto.db"))
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns

    def save(self, timeout: float = 10.0) -> Deferred[None]:
        """Have mosquitto write its persistence file now (SIGUSR1); fires once the new file is in place."""
        if not self.persistence:
            raise RuntimeError("save() needs MosquittoBroker(persistence=True)")
        assert self._process is not None
        before = self._db_stamp()
        self._process.send_signal(signal.SIGUSR1)
        return poll_until(
            lambda: self._db_stamp() not in (None, before),
            timeout=timeout,
            reactor=self._reactor,
            description=f"mosquitto on port {self.port} to write its persistence file",
        ).addCallback(lambda _: None)

    def crash(self, timeout: float = 10.0) -> Deferred[None]:
        """SIGKILL: no clean shutdown, nothing saved, whatever it had not read is gone; files stay
        for the next ``start()`` (the state of the last ``save()``)."""
        return self._terminate(timeout, signal.SIGKILL)

    def _check_saved(self, result: Any) -> Any:
        if self._db_stamp() is None:
            raise RuntimeError(f"mosquitto on port {self.port} saved no persistence file:\n{self.log_tail()}")
        return result


# -- an MQTT client that records what it receives -----------------------------


class Received(NamedTuple):
    topic: str
    payload: bytes
    retain: bool


class MqttRecorder:
    """A paho client in its own thread, subscribed to ``topic_filter``, recording what arrives.

    ``clean_session=False`` with a fixed ``client_id`` keeps its subscription and the QoS>0
    messages queued for it in the broker while it is away (and across a persistent broker's
    restart).  It reconnects by itself; without a session on the broker it subscribes again.
    """

    _instances = 0

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str,
        qos: int = 1,
        client_id: str | None = None,
        clean_session: bool = True,
        reactor: Any = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        MqttRecorder._instances += 1
        self.host = host
        self.port = port
        self.topic_filter = topic_filter
        self.qos = qos
        self.client_id = client_id or f"recorder-{os.getpid()}-{MqttRecorder._instances}"
        self._reactor = reactor
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._subscribed = threading.Event()
        self._acks: dict[int, Deferred[None]] = {}
        self._started = False
        self.sessions_present: list[bool] = []
        """For each successful connect, whether the broker still had this client's session."""
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            client.username_pw_set(username, password)
        client.reconnect_delay_set(0.05, 0.5)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._client = client

    # paho's thread

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not reason_code.is_failure:
            self.sessions_present.append(bool(flags.session_present))
        if not reason_code.is_failure and not flags.session_present:
            client.subscribe(self.topic_filter, self.qos)
        elif not reason_code.is_failure:
            self._subscribed.set()  # the broker kept the subscription

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, properties: Any) -> None:
        if codes and not codes[0].is_failure:
            self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self._received.append(Received(message.topic, bytes(message.payload), bool(message.retain)))

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._reactor.callFromThread(self._acked, mid)

    # reactor thread

    def _acked(self, mid: int) -> None:
        d = self._acks.pop(mid, None)
        if d is not None:
            d.callback(None)

    def start(self, timeout: float = 10.0) -> Deferred[None]:
        """Connect and subscribe; fires after SUBACK."""
        if not self._started:
            self._started = True
            self._client.connect_async(self.host, self.port, keepalive=30)
            self._client.loop_start()
        return poll_until(
            self._subscribed.is_set,
            timeout=timeout,
            reactor=self._reactor,
            description=f"recorder {self.client_id} subscribed to {self.topic_filter}",
        ).addCallback(lambda _: None)

    def messages(self, topic: str | None = None) -> list[Received]:
        """What arrived so far, in order; only on ``topic`` when given."""
        with self._lock:
            received = list(self._received)
        if topic is None:
            return received
        return [m for m in received if m.topic == topic]

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    def wait_for(
        self, predicate: Callable[[list[Received]], Any], timeout: float = 10.0
    ) -> Deferred[list[Received]]:
        """Fires with ``messages()`` once ``predicate(messages())`` is true."""
        d = poll_until(
            lambda: predicate(self.messages()),
            timeout=timeout,
            reactor=self._reactor,
            description=f"recorder {self.client_id}: {_describe(predicate)}",
        )
        return d.addCallback(lambda _: self.messages())

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Deferred[None]:
        """Publish through this client; fires once the broker acknowledged it (or it was written, QoS 0)."""
        info = self._client.publish(topic, payload, qos, retain)
        d: Deferred[None] = Deferred()
        self._acks[info.mid] = d
        return d

    def stop(self) -> Deferred[None]:
        """Disconnect and join paho's thread (in a worker thread, so the reactor does not block)."""
        if not self._started:
            return succeed(None)
        self._started = False
        self._client.disconnect()
        self._acks.clear()
        return deferToThread(self._client.loop_stop).addCallback(lambda _: None)


# -- a reactor for code that receives callFromThread --------------------------


class _SynchronousThreadPool:
    """Runs 'thread' work at once in the caller; results come back through callFromThread."""

    def callInThreadWithCallback(
        self, on_result: Callable[..., Any], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)

    def callInThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        f(*a, **kw)


class ThreadedMemoryReactorClock(MemoryReactorClock):
    """A ``MemoryReactorClock`` whose ``callFromThread`` only queues (from any thread).

    Queued calls run in ``pump()`` and at the start of ``advance()``; ``getThreadPool()`` runs
    work synchronously, so ``deferToThreadPool`` results arrive on the next pump.
    """

    def __init__(self) -> None:
        super().__init__()
        self._from_thread: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []
        self._from_thread_lock = threading.Lock()
        self._pool = _SynchronousThreadPool()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        with self._from_thread_lock:
            self._from_thread.append((f, args, kwargs))

    @property
    def pending_from_thread(self) -> int:
        """How many callFromThread calls wait for the next pump."""
        with self._from_thread_lock:
            return len(self._from_thread)

    def pump(self) -> int:
        """Run queued callFromThread calls, including those they queue; returns how many ran."""
        ran = 0
        while True:
            with self._from_thread_lock:
                queued, self._from_thread = self._from_thread, []
            if not queued:
                return ran
            for f, args, kwargs in queued:
                f(*args, **kwargs)
                ran += 1

    def advance(self, amount: float) -> None:
        self.pump()
        super().advance(amount)
        self.pump()

    def getThreadPool(self) -> _SynchronousThreadPool:
        return self._pool

    def callInThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._pool.callInThread(f, *args, **kwargs)
