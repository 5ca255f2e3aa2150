"""Frame bounds through a real gateway and Mosquitto: what the gateway sends, echoes and answers."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.integration.harness import GatewayHarness

# Charge points may send 2 KB; the gateway may send 8 KB (more than Autobahn's receive limit).
CONFIG = "[gateway]\nmax_frame_size = 2KB\nmax_outgoing_frame_size = 8KB\nmax_unique_id_length = 36\n"


class OutgoingFrameTests(TestCase):
    """max_frame_size bounds what charge points send; max_outgoing_frame_size what the gateway sends."""

    @inlineCallbacks
    def setUp(self) -> Any:
        self.gw = GatewayHarness(self, CONFIG)
        yield self.gw.start()
        self.client = yield self.gw.connect("CP1", ocpp_client=False)

    def command(self, unique_id: str, data: str) -> None:
        self.gw.publish(
            "CP1",
            {
                "MessageTypeId": 2,
                "UniqueId": unique_id,
                "Action": "DataTransfer",
                "Payload": {"vendorId": "v", "data": data},
            },
        )

    @inlineCallbacks
    def test_larger_than_max_frame_size_is_sent(self) -> None:
        """A 5 KB Call goes out although charge points may only send 2 KB (today Autobahn raises)."""
        self.command("c1", "x" * 5000)
        text = yield self.client.recv()
        self.assertEqual(json.loads(text)[1], "c1")
        yield self.client.send(json.dumps([3, "c1", {"status": "Accepted"}]))
        (reply,) = yield self.gw.wait_messages("ocpp/cp/CP1/Reply", 1)
        self.assertEqual((reply["UniqueId"], reply["Action"]), ("c1", "DataTransfer"))

    @inlineCallbacks
    def test_over_max_outgoing_frame_size(self) -> None:
        """A 20 KB Call is answered GenericError on the error topic and the next Call goes out at once."""
        self.command("big", "y" * 20_000)
        self.command("next", "small")
        text = yield self.client.recv()
        self.assertEqual(json.loads(text)[1], "next")
        (error,) = yield self.gw.wait_messages("ocpp/cp/CP1/Reply", 1)
        self.assertEqual(
            (error["MessageTypeId"], error["UniqueId"], error["Action"], error["ErrorCode"]),
            (4, "big", "DataTransfer", "GenericError"),
        )
        self.assertIn("max_outgoing_frame_size", error["ErrorDescription"])
        assert self.gw.service is not None
        self.assertEqual(self.gw.service.metrics.value("outgoing_oversized", kind="Call"), 1)

    @inlineCallbacks
    def test_long_unique_id_answered_without_echo(self) -> None:
        """A 1,500-character UniqueId gets a FormationViolation with UniqueId "-1"."""
        yield self.client.send(json.dumps([2, "L" * 1500, "Heartbeat", {}]))
        answer = yield self.client.recv()
        self.assertEqual(
            json.loads(answer), [4, "-1", "FormationViolation", "UniqueId longer than 36 characters", {}]
        )

    @inlineCallbacks
    def test_broken_json_answered(self) -> None:
        """NaN, deep nesting and a BOM: each answered with a CallError carrying the frame's UniqueId."""
        frames = {
            "n1": '[2,"n1","DataTransfer",{"vendorId":"v","data":NaN}]',
            "n2": '[2,"n2","DataTransfer",{"vendorId":"v","data":' + "[" * 80 + "]" * 80 + "}]",
            "n3": '\ufeff[2,"n3","Heartbeat",{}]',
        }
        for unique_id, text in frames.items():
            yield self.client.send(text)
            answer = json.loads((yield self.client.recv()))
            self.assertEqual(answer[:3], [4, unique_id, "FormationViolation"])
