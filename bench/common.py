"""Shared plumbing of the benchmarks: private Mosquitto, gateway subprocess, process statistics.

Every child is started with PR_SET_PDEATHSIG, so it dies with the benchmark
process even if that one is killed, and every wait here has a deadline.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import pwd
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import IO, Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
LOADGEN = os.path.join(BENCH_DIR, "loadgen.py")
RESPONDER = os.path.join(BENCH_DIR, "responder.py")
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PYTHON = sys.executable
# What the twistd console script does, with this interpreter (``python -m twisted.scripts.twistd``
# runs nothing: that module has no __main__ guard). The gateway's source tree (this checkout unless
# told otherwise) goes first on PYTHONPATH and is its working directory, so ``ocppgw.tap`` (the
# module the twistd plugin names) is that tree's whether or not ocppgw is installed.
TWISTD = ["-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_PR_SET_PDEATHSIG = 1


def gateway_options(options: list[str]) -> dict[str, dict[str, str]]:
    """``--gateway-option SECTION.KEY=VALUE`` values as gw.ini sections."""
    out: dict[str, dict[str, str]] = {}
    for option in options:
        name, _, value = option.partition("=")
        section, _, key = name.strip().rpartition(".")
        if not section or not key or not _:
            raise SystemExit(f"--gateway-option wants SECTION.KEY=VALUE, got {option!r}")
        out.setdefault(section, {})[key] = value.strip()
    return out


def add_gateway_option(parser: Any) -> None:
    """``--gateway-option SECTION.KEY=VALUE`` (repeatable), read with ``gateway_options``."""
    parser.add_argument(
        "--gateway-option",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="extra gw.ini setting, e.g. upstream.qos=0 (repeatable)",
    )


def add_run_options(parser: Any) -> None:
    """The options every benchmark takes: where to write JSON, waiting for a quiet machine, keeping files."""
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for other work on the machine to stop (< 0.3 busy cores)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")


def add_gateway_src_option(parser: Any) -> None:
    """``--gateway-src DIR``: the source tree to run the gateway from (``run_benchmark`` checks it)."""
    parser.add_argument(
        "--gateway-src",
        default=REPO,
        metavar="DIR",
        help="run the gateway from this source tree (default: this checkout)",
    )


def raise_nofile() -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; returns the new limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _child_setup() -> None:
    """Runs in each child between fork and exec: die with the parent, and may open many sockets."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass
    raise_nofile()
    os.setsid()  # a Ctrl-C in the terminal is for the benchmark, which stops its children in order


def pin(pid: int, cpu: int) -> None:
    """Bind every thread of process ``pid`` to ``cpu``."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {cpu})


def spawn(
    argv: Sequence[str], log: IO[bytes] | int | None = None, stdout: Any = None, **kwargs: Any
) -> subprocess.Popen:
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else (log if log is not None else subprocess.DEVNULL),
        stderr=log if log is not None else subprocess.DEVNULL,
        preexec_fn=_child_setup,
        **kwargs,
    )


def stop(process: subprocess.Popen | None, timeout: float = 15.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit status."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def read_line(stream: IO[bytes], timeout: float, what: str) -> str:
    """One line from a child's stdout pipe, waiting at most ``timeout`` seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
    line = stream.readline()
    if not line:
        raise RuntimeError(f"{what}: the process ended without answering")
    return line.decode("utf-8", "replace").strip()


class Workdir:
    """A temporary directory holding configs and logs; kept when ``keep`` is set."""

    def __init__(self, prefix: str, keep: bool = False, parent: Workdir | None = None) -> None:
        """``parent``: make it inside that one (one of several stacks in a run), removed with it."""
        self.path = tempfile.mkdtemp(prefix=prefix, dir=parent.path if parent else None)
        self.keep = keep

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def cleanup(self) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)


class Broker:
    """A private Mosquitto on 127.0.0.1 and a free port, no persistence."""

    def __init__(self, work: Workdir, extra: Sequence[str] = ()) -> None:
        self.work = work
        self.extra = list(extra)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        conf = self.work.file("mosquitto.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(
                "\n".join(
                    [
                        f"listener {self.port} 127.0.0.1",
                        "allow_anonymous true",
                        "persistence false",
                        f"user {pwd.getpwuid(os.getuid()).pw_name}",
                        "log_dest stderr",
                        "log_type error",
                        "log_type warning",
                        *self.extra,
                    ]
                )
                + "\n"
            )
        log = open(self.work.file("mosquitto.log"), "ab")
        self.process = spawn([MOSQUITTO, "-c", conf], log=log)
        log.close()
        process = self.process

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with status {process.returncode}; see {self.work.path}")
            return port_accepts(self.port)

        wait_until(up, timeout, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        stop(self.process)


def gateway_ini(ws_port: int, mqtt_port: int, extra: dict[str, dict[str, str]] | None = None) -> str:
    sections: dict[str, dict[str, str]] = {
        "gateway": {"message_format_checking": "disable", "node_name": f"bench{os.getpid()}"},
        "mqtt": {"host": "127.0.0.1", "port": str(mqtt_port), "client_id": f"ocppgw-bench-{os.getpid()}"},
        "listeners.ws.bench": {"bind": f"127.0.0.1:{ws_port}"},
    }
    for section, values in (extra or {}).items():
        sections.setdefault(section, {}).update(values)
    out = []
    for section, values in sections.items():
        out.append(f"[{section}]")
        out.extend(f"{key} = {value}" for key, value in values.items())
        out.append("")
    return "\n".join(out)


def gateway_env(src: str) -> dict[str, str]:
    """The environment the gateway from source tree ``src`` runs in: ``src`` first on PYTHONPATH, and
    no bytecode written, so that running another checkout (one kept read-only) leaves it as it was."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def checkout(src: str) -> str | None:
    """``git describe --always --dirty`` of the tree at ``src``, or None outside git."""
    try:
        described = subprocess.run(
            ["git", "-C", src, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return described or None


def gateway_source(src: str) -> dict[str, Any]:
    """Where the gateway started from ``src`` imports ``ocppgw.tap`` from (the module the twistd plugin
    names), checked to be inside ``src``: an installed copy of ocppgw must not stand in for the tree."""
    src = os.path.realpath(src)
    probe = subprocess.run(
        [PYTHON, "-c", "import ocppgw.tap; print(ocppgw.tap.__file__)"],
        cwd=src,
        env=gateway_env(src),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    tap = os.path.realpath(probe.stdout.strip()) if probe.returncode == 0 else ""
    if not tap.startswith(src + os.sep):
        detail = probe.stderr.strip().splitlines()[-1:] or [tap]
        raise SystemExit(f"the gateway from {src} does not import ocppgw.tap from it: {detail[0]}")
    return {"path": src, "ocppgw_tap": tap, "checkout": checkout(src)}


class Gateway:
    """``twistd -n ocppgw --config gw.ini`` in a subprocess, on a free loopback port, run from the
    source tree ``src`` (this checkout by default; see ``gateway_env``).

    ``label`` goes into the names of its files (``gw<label>.ini``, ``gateway<label>.log``), so that
    gateways started one after another in the same work directory keep their own.
    """

    def __init__(
        self,
        work: Workdir,
        mqtt_port: int,
        extra: dict[str, dict[str, str]] | None = None,
        label: str = "",
        src: str = REPO,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.work = work
        self.src = src
        self.wrapper = list(wrapper)  # a command the gateway runs under, e.g. valgrind
        self.port = free_port()
        self.extra = extra or {}
        self.ini = work.file(f"gw{label}.ini")
        self.log_path = work.file(f"gateway{label}.log")
        self.stderr_path = work.file(f"gateway{label}.stderr")
        with open(self.ini, "w", encoding="utf-8") as f:
            f.write(gateway_ini(self.port, mqtt_port, extra))
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def workers(self) -> int:
        """``[gateway] workers`` of its gw.ini (1: one process; more: the twistd process is the master)."""
        value = (self.extra.get("gateway") or {}).get("workers", "1")
        return (os.cpu_count() or 1) if value == "auto" else int(value)

    def pids(self) -> list[int]:
        """The gateway's processes: twistd (the master, with workers), then its workers (and any
        hashing processes)."""
        return [self.pid, *sorted(descendants(self.pid))]

    def cpu_seconds(self) -> float:
        """CPU time so far of all the gateway's processes (``tree_cpu_seconds``)."""
        return tree_cpu_seconds(self.pid)

    def start(self, timeout: float = 30.0) -> None:
        argv = [
            *self.wrapper,
            PYTHON,
            *TWISTD,
            "-n",
            "--pidfile=",
            f"--logfile={self.log_path}",
            "ocppgw",
            "--config",
            self.ini,
        ]
        stderr = open(self.stderr_path, "ab")
        self.process = spawn(argv, log=stderr, cwd=self.src, env=gateway_env(self.src))
        stderr.close()
        process = self.process

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the gateway exited with status {process.returncode}; see {self.work.path}"
                )
            if not os.path.exists(self.log_path):
                return False
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            # with workers, the master and every worker (their lines relayed to its log) connect
            links = self.workers + 1 if self.workers > 1 else 1
            return (
                text.count("] connected to MQTT broker") >= links
                and text.count("] listener ") >= self.workers
                and port_accepts(self.port)
            )

        wait_until(up, timeout, "the gateway to listen and reach the broker", interval=0.1)

    def stop(self) -> int | None:
        return stop(self.process, timeout=20)


def start_responder(work: Workdir, mqtt_port: int, lifetime: float, *options: str) -> subprocess.Popen:
    """``responder.py`` on the private broker, once it reports that it has subscribed; it ends by
    itself after ``lifetime`` seconds."""
    log = open(work.file("responder.log"), "ab")
    argv = [PYTHON, RESPONDER, "--port", str(mqtt_port), *options, "--max-seconds", str(lifetime)]
    responder = spawn(argv, log=log, stdout=subprocess.PIPE)
    log.close()
    try:
        assert responder.stdout is not None
        if read_line(responder.stdout, 15, "the responder to subscribe") != "ready":
            raise RuntimeError("the responder did not report ready")
    except BaseException:
        stop(responder)
        raise
    return responder


def shares(count: int, procs: int) -> list[tuple[int, int]]:
    """(first index, count) for each of at most ``procs`` client processes sharing ``count`` connections."""
    procs = max(1, min(procs, count))
    share, extra = divmod(count, procs)
    out, first = [], 0
    for i in range(procs):
        n = share + (1 if i < extra else 0)
        out.append((first, n))
        first += n
    return out


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_kb(pid: int, key: str) -> int | None:
    """A ``<key>: <n> kB`` line of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def idle_connections(
    work: Workdir,
    gateway: Gateway,
    url: str,
    *,
    count: int,
    rate: float,
    concurrency: int,
    procs: int,
    settle: float,
    label: str = "idle",
    loadgen_options: Sequence[str] = (),
) -> dict[str, Any]:
    """Gateway RSS before and after ``count`` idle connections to ``url`` (up to the charge point id).

    After ``settle`` seconds, reads the gateway's VmRSS, open descriptors and CPU; ``procs``
    ``loadgen.py idle`` processes then open the connections (at most ``rate`` a second and
    ``concurrency`` handshakes in progress, in all), each sending one BootNotification and waiting
    for its CallResult; once all have reported and ``settle`` seconds have passed, reads them again.
    The clients are stopped (their connections closed) before returning.
    """
    budget = count / rate + 180
    time.sleep(settle)
    rss_before = rss_kb(gateway.pid)
    fds_before = open_fds(gateway.pid)
    cpu_before = cpu_seconds(gateway.pid)
    clients: list[subprocess.Popen] = []
    try:
        started = time.monotonic()
        parts = shares(count, procs)
        for i, (first, n) in enumerate(parts):
            log = open(work.file(f"loadgen-{label}-{i}.log"), "ab")
            argv = [PYTHON, LOADGEN, "idle", "--url", url, "--prefix", f"{label}{i}-cp"]
            argv += ["--first", str(first), "--count", str(n), "--rate", str(rate / len(parts))]
            argv += ["--concurrency", str(max(1, concurrency // len(parts))), "--hold-seconds", str(budget)]
            clients.append(spawn([*argv, *loadgen_options], log=log, stdout=subprocess.PIPE))
            log.close()
        opened = 0
        failures: dict[str, int] = {}
        for client in clients:
            remaining = max(1.0, started + budget - time.monotonic())
            assert client.stdout is not None
            report = json.loads(read_line(client.stdout, remaining, "the idle clients to connect"))
            opened += report["opened"]
            for key, value in report["failures"].items():
                failures[key] = failures.get(key, 0) + value
        open_seconds = time.monotonic() - started
        time.sleep(settle)
        rss_after = rss_kb(gateway.pid)
        fds_after = open_fds(gateway.pid)
        cpu_after = cpu_seconds(gateway.pid)
        hwm = status_kb(gateway.pid, "VmHWM")
        alive = gateway.process is not None and gateway.process.poll() is None
    finally:
        for client in clients:
            stop(client)
    per = (rss_after - rss_before) / opened if opened else None
    return {
        "opened": opened,
        "failures": failures,
        "gateway_alive": alive,
        "gateway_open_fds_before": fds_before,
        "gateway_open_fds_after": fds_after,
        "rss_before_kb": rss_before,
        "rss_after_kb": rss_after,
        "vm_hwm_kb": hwm,
        "kb_per_connection": None if per is None else round(per, 2),
        "open_seconds": round(open_seconds, 2),
        "gateway_cpu_s_while_opening": round(cpu_after - cpu_before, 2),
        "client_procs": len(clients),
        "rate_per_s": rate,
    }


def group_cpu(groups: dict[str, Sequence[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named group of processes (one gone meanwhile counts 0)."""
    out = {}
    for name, pids in groups.items():
        total = 0.0
        for pid in pids:
            try:
                total += cpu_seconds(pid)
            except (OSError, IndexError, ValueError):
                continue
        out[name] = total
    return out


def cpu_cores(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """Cores each group of two ``group_cpu`` readings ``wall`` seconds apart kept busy, on average."""
    return {name: round((after[name] - before[name]) / wall, 3) for name in before} if wall > 0 else {}


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (utime is [11], stime [12])."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every live process below it (a gateway's hashing processes, a
    master's workers), plus what its children that ended and were reaped had used."""
    total = sum(int(x) for x in _stat_fields(pid)[11:15]) / CLOCK_TICKS
    for child in descendants(pid):
        try:
            total += cpu_seconds(child)
        except (OSError, ValueError, IndexError):
            pass  # ended meanwhile
    return total


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and every live process below it: the kernel's share
    (sockets, epoll) is what no change to the gateway's Python code takes off."""
    user = system = 0.0
    for each in (pid, *descendants(pid)):
        try:
            fields = _stat_fields(each)
        except OSError:
            continue  # ended meanwhile
        user += int(fields[11]) / CLOCK_TICKS
        system += int(fields[12]) / CLOCK_TICKS
    return user, system


def system_busy_seconds() -> float:
    """CPU seconds all cores spent busy (not idle, not waiting for I/O) since boot, from /proc/stat."""
    return system_cpu()[0]


def system_cpu() -> tuple[float, float]:
    """(busy, interrupt) CPU seconds of all cores since boot, from /proc/stat; interrupt time (irq and
    softirq: on loopback, most of the TCP receive path) is part of busy."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    guest = sum(values[8:10])  # already counted in user and nice
    return (sum(values) - guest - idle) / CLOCK_TICKS, (values[5] + values[6]) / CLOCK_TICKS


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores were busy, on average, over the next ``seconds``."""
    before = system_busy_seconds()
    time.sleep(seconds)
    return (system_busy_seconds() - before) / seconds


def wait_quiet(limit_s: float, threshold: float = 0.3, name: str = "bench") -> float:
    """Wait up to ``limit_s`` seconds for the machine to have fewer than ``threshold`` busy cores;
    returns the last reading and warns on stderr when it never got that quiet."""
    deadline = time.monotonic() + limit_s
    while True:
        busy = busy_cores(1.0)
        if busy < threshold or time.monotonic() >= deadline:
            break
    if busy >= threshold:
        print(
            f"{name}: warning: {busy:.2f} cores busy with other work before the run; "
            "figures will be lower than on a quiet machine",
            file=sys.stderr,
        )
    return busy


def listen_overflows() -> int:
    """TcpExt ListenOverflows from /proc/net/netstat: connections dropped, system-wide, because a
    listening socket's accept queue was full (the client retransmits its SYN after 1 s)."""
    with open("/proc/net/netstat", encoding="ascii") as f:
        lines = [line.split() for line in f]
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names and names[0] == "TcpExt:" and "ListenOverflows" in names:
            return int(values[names.index("ListenOverflows")])
    return 0


def all_cpu_seconds() -> dict[int, tuple[str, float]]:
    """pid -> (command line, CPU seconds) of every process now."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            out[int(entry)] = (cmd[:120], cpu_seconds(int(entry)))
        except (OSError, IndexError, ValueError):
            continue
    return out


def top_other(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    ours: set[int],
    wall: float,
    count: int = 3,
) -> list[list[Any]]:
    """The processes outside ``ours`` that used the most CPU between two ``all_cpu_seconds`` readings."""
    used = []
    for pid, (cmd, seconds) in after.items():
        if pid in ours:
            continue
        used.append((seconds - before.get(pid, (cmd, 0.0))[1], pid, cmd))
    used.sort(reverse=True)
    return [[round(u / wall, 3), cmd] for u, _pid, cmd in used[:count] if u / wall >= 0.02]


def rss_kb(pid: int) -> int:
    """VmRSS of a process in KiB, from /proc/<pid>/status."""
    value = status_kb(pid, "VmRSS")
    if value is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return value


def rss_total_kb(pids: Sequence[int]) -> int:
    """VmRSS of several processes added up, in KiB (a gateway's master and workers)."""
    return sum(rss_kb(pid) for pid in pids)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, int(-(-fraction * len(sorted_values) // 1)))  # ceil
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    try:
        mosquitto = subprocess.run(
            [MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        mosquitto = None
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "ocppgw": _version("ocppgw"),
        "ocppgw_checkout": checkout(REPO),
        "twisted": _version("twisted"),
        "autobahn": _version("autobahn"),
        "paho-mqtt": _version("paho-mqtt"),
        "orjson": _version("orjson"),
        "websockets": _version("websockets"),
        "mosquitto": mosquitto,
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }


def run_benchmark(
    name: str,
    args: Any,
    workdir_prefix: str,
    measure: Callable[[Workdir], dict[str, Any]],
    more_versions: Callable[[], dict[str, Any]] | None = None,
) -> int:
    """A benchmark's main after parsing its options (``add_run_options``): check ``--gateway-src``
    where it has one, raise RLIMIT_NOFILE, wait for a quiet machine, ``measure`` in a fresh work
    directory, and print (and write) one JSON object; the work directory is kept when anything fails."""
    src = getattr(args, "gateway_src", None)
    source = {"gateway_src": gateway_source(src)} if src else {}
    raise_nofile()
    background = wait_quiet(args.wait_quiet, name=name)
    work = Workdir(workdir_prefix, keep=args.keep)
    ok = False
    try:
        date = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        result = {
            "benchmark": name,
            "date": date,
            "busy_cores_before_run": round(background, 3),
            **source,
            **measure(work),
            "versions": {**versions(), **(more_versions() if more_versions else {})},
        }
        if args.keep:
            result["workdir"] = work.path
        dump(result, args.out)
        ok = True
    finally:
        if not ok:
            print(f"{name}: failed; logs in {work.path}", file=sys.stderr)
            work.keep = True
        work.cleanup()
    return 0


def dump(result: dict[str, Any], path: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text, flush=True)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text + "\n")


# -- issue 12: many connections, the gateway's own metrics -------------------------------------------

API_KEY, API_SECRET = "bench", "bench-secret-0123456789"


def api_options(work: Workdir) -> tuple[int, dict[str, dict[str, str]]]:
    """A free port for the management API and the gw.ini sections serving it, with one viewer API key
    (``API_KEY``/``API_SECRET``) from a bootstrap file, so that a benchmark can read ``/metrics``."""
    port = free_port()
    bootstrap = work.file("api_keys")
    with open(bootstrap, "w", encoding="utf-8") as f:
        f.write(f"{API_KEY}:{API_SECRET}:viewer\n")
    return port, {"api": {"enable": "true", "bind": f"127.0.0.1:{port}", "bootstrap_file": bootstrap}}


def scrape_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The gateway's ``/metrics`` as {(sample name, sorted labels): value}."""
    import base64
    import http.client

    from prometheus_client.parser import text_string_to_metric_families

    token = base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode("ascii")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics", headers={"Authorization": f"Basic {token}"})
        response = connection.getresponse()
        body = response.read().decode("utf-8")
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}: {body[:200]}")
    finally:
        connection.close()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def histogram_delta(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    name: str,
    **labels: str,
) -> dict[str, float]:
    """Bucket counts (``le`` -> count) of histogram ``name`` added between two scrapes, plus ``count``
    and ``sum``; ``worst_le``: the smallest bound holding every observation of the interval."""
    wanted = tuple(sorted(labels.items()))
    buckets: dict[str, float] = {}
    for (sample, sample_labels), value in after.items():
        if sample != f"{name}_bucket":
            continue
        rest = tuple((k, v) for k, v in sample_labels if k != "le")
        if rest != wanted:
            continue
        le = dict(sample_labels)["le"]
        buckets[le] = value - before.get((sample, sample_labels), 0.0)
    count = after.get((f"{name}_count", wanted), 0.0) - before.get((f"{name}_count", wanted), 0.0)
    total = after.get((f"{name}_sum", wanted), 0.0) - before.get((f"{name}_sum", wanted), 0.0)
    ordered = sorted(buckets.items(), key=lambda kv: float(kv[0]))
    worst = next((le for le, n in ordered if n >= count), None)
    shown = {le: n for le, n in ordered if 0 < n < count}  # the cumulative counts that say something
    return {"count": count, "sum": round(total, 6), "worst_le": worst, "buckets_below_worst": shown}


def source_address(index: int) -> str:
    """The loopback source address of load generator ``index``: 127.0.0.2, 127.0.0.3, ..."""
    return f"127.0.0.{2 + index}"


def start_loadgens(
    work: Workdir,
    mode: str,
    url: str,
    *,
    count: int,
    procs: int,
    rate: float,
    concurrency: int,
    hold: float,
    label: str,
    options: Sequence[str] = (),
) -> list[subprocess.Popen]:
    """``procs`` ``loadgen.py <mode>`` processes sharing ``count`` connections, each from its own
    loopback source address (each process is under the same open-file limit as the gateway)."""
    clients = []
    parts = shares(count, procs)
    for i, (first, n) in enumerate(parts):
        log = open(work.file(f"loadgen-{label}-{i}.log"), "ab")
        argv = [PYTHON, LOADGEN, mode, "--url", url, "--prefix", f"{label}{i}-cp"]
        argv += ["--source", source_address(i)]
        argv += ["--first", str(first), "--count", str(n), "--rate", str(rate / len(parts))]
        argv += ["--concurrency", str(max(1, concurrency // len(parts))), "--hold-seconds", str(hold)]
        clients.append(spawn([*argv, *options], log=log, stdout=subprocess.PIPE))
        log.close()
    return clients


def read_reports(clients: Sequence[subprocess.Popen], timeout: float, what: str) -> list[dict[str, Any]]:
    """One JSON line from each client, within ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    reports = []
    for client in clients:
        assert client.stdout is not None
        line = read_line(client.stdout, max(1.0, deadline - time.monotonic()), what)
        reports.append(json.loads(line))
    return reports


def merged_failures(reports: Sequence[dict[str, Any]], key: str = "failures") -> dict[str, int]:
    out: dict[str, int] = {}
    for report in reports:
        for name, value in report.get(key, {}).items():
            out[name] = out.get(name, 0) + value
    return out
