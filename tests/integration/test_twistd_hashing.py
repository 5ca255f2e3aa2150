"""bcrypt's hashing processes under a real ``twistd -n ocppgw``: spawned at start-up in a session of
their own at a low priority and in the idle CPU group, answering the handshakes, and gone when twistd
stops or is killed."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import websockets
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from ocppgw.auth.hash_workers import NICE
from ocppgw.auth.idle_group import GROUP_NAME
from tests.integration.harness import AsyncioThread, run_cli
from tests.integration.twistd_process import spawn_twistd, until_listening, write_ini
from tests.support import MosquittoBroker, free_port, poll_until

PASSWORD = "hashed in a child"


def hashing_processes(parent: int) -> list[int]:
    """Live (not zombie) processes running ``ocppgw.auth.hash_child`` whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            stat = _stat(int(entry))
        except OSError:
            continue
        if b"ocppgw.auth.hash_child" in cmdline and stat["ppid"] == parent and stat["state"] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie counts as ended)."""
    try:
        return _stat(pid)["state"] != "Z"
    except OSError:
        return False


def _stat(pid: int) -> dict[str, Any]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rpartition(")")[2].split()
    return {"state": fields[0], "ppid": int(fields[1]), "session": int(fields[3]), "nice": int(fields[16])}


class TwistdHashingTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def start(self, options: str = "") -> Any:
        """twistd with a built-in database of bcrypt users and one user, CP1, added by the CLI;
        ``options``: more lines of ``[authentication]``."""
        broker = MosquittoBroker(self)
        yield broker.start()
        self.ws_port = free_port()
        data_dir = Path(self.mktemp()).absolute()
        config = write_ini(
            self,
            f"[gateway]\ndata_dir = {data_dir}\n\n[mqtt]\nport = {broker.port}\n\n"
            f"[listeners.ws.default]\nbind = 127.0.0.1:{self.ws_port}\n\n"
            "[authentication]\nbackend = built_in_database\nuser_id_type = clientid\n"
            f"password_hash_algorithm = bcrypt\nsalt_rounds = 5\n{options}",
        )
        _out, err, code = yield run_cli(str(config), "users", "add", "CP1", "--password", PASSWORD)
        self.assertEqual(code, 0, err)
        child, transport = spawn_twistd(self, config)
        yield until_listening(child, self.ws_port)
        self.loop = AsyncioThread()
        self.addCleanup(self.loop.stop)
        return child, transport

    def handshake(self, password: str) -> Any:
        """The status of a handshake of CP1 with ``password``: 101, or the refusal's."""

        async def attempt() -> int:
            token = base64.b64encode(f"CP1:{password}".encode()).decode("ascii")
            url = f"ws://127.0.0.1:{self.ws_port}/ocpp/CP1"
            headers = {"Authorization": f"Basic {token}"}
            try:
                websocket = await websockets.connect(
                    url, subprotocols=["ocpp1.6"], additional_headers=headers, open_timeout=10
                )
            except websockets.InvalidStatus as e:
                return e.response.status_code
            await websocket.close()
            return 101

        return self.loop.run(attempt())

    @inlineCallbacks
    def test_hashing_processes_answer_and_end_with_twistd(self) -> Any:
        """The right password is let in and a wrong one gets 401, both hashed in a child of twistd in
        a session of its own at nice ``NICE``; SIGTERM ends twistd and its hashing processes."""
        child, transport = yield self.start()
        self.assertEqual((yield self.handshake(PASSWORD)), 101)
        self.assertEqual((yield self.handshake("wrong")), 401)
        yield poll_until(lambda: "bad_username_or_password" in child.output(), timeout=10)
        denied = [line for line in child.output().splitlines() if "bad_username_or_password" in line]
        self.assertEqual(len(denied), 1, child.output())  # the decision's line, not Autobahn's echo of it
        self.assertNotIn("dropping connection", child.output())
        pids = hashing_processes(transport.pid)
        self.assertEqual(len(pids), max(1, (os.cpu_count() or 1) - 1), child.output())
        for pid in pids:
            stat = _stat(pid)
            self.assertNotEqual(stat["session"], _stat(transport.pid)["session"])
            self.assertEqual(stat["nice"], NICE)
            # and in the idle CPU group (these machines allow one: tests/test_auth_idle_group.py)
            self.assertIn(f"/{GROUP_NAME}\n", Path(f"/proc/{pid}/cgroup").read_text())
        self.assertIn("hashing processes run at idle CPU priority", child.output())
        transport.signalProcess("TERM")
        yield poll_until(lambda: child.done, timeout=30, description="twistd to exit")
        yield poll_until(lambda: not any(alive(pid) for pid in pids), timeout=15, description="hashing ended")
        self.assertNotIn("Traceback", child.output())

    @inlineCallbacks
    def test_low_priority(self) -> Any:
        """``hashing_priority = low``: the hashing processes answer at nice ``NICE`` outside the idle
        group, and the start-up line says why."""
        child, transport = yield self.start("hashing_priority = low\n")
        self.assertEqual((yield self.handshake(PASSWORD)), 101)
        self.assertEqual((yield self.handshake("wrong")), 401)
        pids = hashing_processes(transport.pid)
        self.assertTrue(pids, child.output())
        for pid in pids:
            self.assertEqual(_stat(pid)["nice"], NICE)
            self.assertNotIn(GROUP_NAME, Path(f"/proc/{pid}/cgroup").read_text())
        self.assertIn("without an idle CPU group: [authentication] hashing_priority = low", child.output())
        self.assertNotIn("Traceback", child.output())

    @inlineCallbacks
    def test_hashing_processes_end_when_twistd_is_killed(self) -> Any:
        """A gateway killed outright leaves no hashing process behind: each ends at the end of its
        input."""
        child, transport = yield self.start()
        self.assertEqual((yield self.handshake(PASSWORD)), 101)
        pids = hashing_processes(transport.pid)
        self.assertTrue(pids, child.output())
        transport.signalProcess("KILL")
        yield poll_until(lambda: child.done, timeout=30, description="twistd to die")
        yield poll_until(lambda: not any(alive(pid) for pid in pids), timeout=15, description="hashing ended")

