"""20,000 mutated frames from one charge point while another keeps round-tripping Calls (issue 9).

The fuzzing charge point is a raw ``websockets`` client on the harness's asyncio thread; a frame that
is not UTF-8 makes the gateway close the connection (1007, or a drop), after which it reconnects and
goes on. The other
charge point sends Heartbeats that a central system (the test, over MQTT) answers. Afterwards: no
traceback or critical event was logged, no gateway log line grew with what the peer sent, every
Heartbeat was delivered to MQTT once and answered, and the gateway counted every frame sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from typing import Any

import websockets
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.integration.fuzz_frames import FrameFuzzer
from tests.integration.harness import GatewayHarness
from tests.support import MqttRecorder, poll_until

FRAMES = 20_000
SEED = 9
TIME = "2026-01-01T00:00:00Z"


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def _fuzz(url: str, frames: list[bytes]) -> dict[str, Any]:
    """Send every frame as a text frame; after one that is not UTF-8, wait for the 1007 and reconnect."""
    stats: dict[str, Any] = {"sent": 0, "fatal": 0, "answers": 0, "close_codes": [], "unexpected": []}

    async def open_() -> tuple[Any, asyncio.Task[None]]:
        ws = await websockets.connect(url, subprotocols=["ocpp1.6"], max_size=None, open_timeout=10)

        async def drain() -> None:  # read every answer, so the gateway never waits on this client
            try:
                async for _ in ws:
                    stats["answers"] += 1
            except websockets.ConnectionClosed:
                pass

        return ws, asyncio.ensure_future(drain())

    ws, reader = await open_()
    for n, data in enumerate(frames):
        try:
            await ws.send(data, text=True)
        except websockets.ConnectionClosed as e:
            stats["unexpected"].append((n, e.rcvd.code if e.rcvd else None, repr(data[:80])))
            await reader
            ws, reader = await open_()
            continue
        if _utf8(data):
            stats["sent"] += 1
            continue
        stats["fatal"] += 1
        await asyncio.wait_for(reader, 10)
        stats["close_codes"].append(ws.close_code)
        ws, reader = await open_()
    await ws.close()
    await reader
    return stats


class FuzzTests(TestCase):
    """Hostile frames never cost a traceback, nor another charge point its messages."""

    timeout = 120

    @inlineCallbacks
    def setUp(self) -> Any:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.gw = GatewayHarness(self, checking="all")
        yield self.gw.start()
        self.central = MqttRecorder("127.0.0.1", self.gw.broker.port, "ocpp/cp/CP2")
        yield self.central.start()
        self.addCleanup(self.central.stop)

    def delivered(self, unique_id: str) -> bool:
        return any(json.loads(m.payload)["UniqueId"] == unique_id for m in self.central.messages())

    @inlineCallbacks
    def round_trips(self, fuzzing: Deferred[Any]) -> Any:
        """Heartbeats from CP2, each answered over MQTT, until the fuzzing is over (at least 10)."""
        client = yield self.gw.connect("CP2", ocpp_client=False)
        sent: list[str] = []
        while not fuzzing.called or len(sent) < 10:
            unique_id = f"hb-{len(sent)}"
            sent.append(unique_id)
            yield client.send(json.dumps([2, unique_id, "Heartbeat", {}]))
            yield poll_until(partial(self.delivered, unique_id), timeout=30)
            answer = {"MessageTypeId": 3, "UniqueId": unique_id, "Payload": {"currentTime": TIME}}
            self.central.publish("ocpp/cs/CP2", json.dumps(answer).encode())
            frame = json.loads((yield client.recv(timeout=30)))
            self.assertEqual(frame[:2], [3, unique_id])
        return sent

    @inlineCallbacks
    def test_mutated_frames(self) -> Any:
        """20,000 mutated frames: 0 tracebacks, every Call of the other charge point delivered."""
        frames = list(FrameFuzzer(SEED).frames(FRAMES))
        started = time.monotonic()
        fuzzing = self.gw.loop.run(_fuzz(self.gw.url("CP1"), frames))
        heartbeats = yield self.round_trips(fuzzing)
        stats = yield fuzzing
        elapsed = time.monotonic() - started

        self.assertEqual(stats["unexpected"], [])
        self.assertEqual(stats["sent"] + stats["fatal"], FRAMES)
        # 1007 with a close frame, or 1006: Autobahn fails a connection by dropping it (failByDrop).
        self.assertLessEqual(set(stats["close_codes"]), {1006, 1007})
        metrics = self.gw.service.metrics
        yield poll_until(
            lambda: metrics.total("frames_received") - len(heartbeats) + metrics.total("frames_invalid")
            >= stats["sent"],
            timeout=30,
        )
        delivered = [json.loads(m.payload)["UniqueId"] for m in self.central.messages()]
        self.assertEqual(sorted(delivered), sorted(heartbeats))

        failures = [e for e in self.events if "log_failure" in e or e.get("log_level") == LogLevel.critical]
        self.assertEqual([formatEvent(e) for e in failures], [])
        for event in self.events:
            if str(event.get("log_namespace", "")).startswith("ocppgw"):
                line = formatEvent(event)
                self.assertNotIn("\n", line)
                self.assertLessEqual(len(line.encode("utf-8")), 1024 + 200, line[:300])
        print(
            f"\nfuzz: {FRAMES} frames ({stats['fatal']} not UTF-8: closed, reconnected), "
            f"{stats['answers']} CallErrors back, {len(heartbeats)} Heartbeat round trips, {elapsed:.1f}s"
        )
