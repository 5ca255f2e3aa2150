"""Mutated OCPP-J frames for the fuzz test: seeded, so every run sends the same frames."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

# Valid frames of each message type, the seeds every mutation starts from.
SEEDS: list[list[Any]] = [
    [2, "b-1", "BootNotification", {"chargePointVendor": "VendorX", "chargePointModel": "ModelY"}],
    [2, "h-1", "Heartbeat", {}],
    [2, "s-1", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}],
    [
        2,
        "m-1",
        "MeterValues",
        {
            "connectorId": 1,
            "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", "sampledValue": [{"value": "12.5"}]}],
        },
    ],
    [2, "d-1", "DataTransfer", {"vendorId": "v", "messageId": "m", "data": "payload"}],
    [3, "r-1", {"status": "Accepted"}],
    [3, "r-2", {"currentTime": "2026-01-01T00:00:00Z", "interval": 300, "status": "Accepted"}],
    [4, "e-1", "GenericError", "something went wrong", {}],
    [4, "e-2", "NotSupported", "", {"detail": [1, 2, 3]}],
]

# Texts spliced into frames: JSON edge cases and what the codec refuses.
INSERTS: list[str] = [
    "[" * 65 + "]" * 65,
    "[" * 3000 + "]" * 3000,
    '{"a":' * 200 + "1" + "}" * 200,
    "1e999",
    "-1e400",
    "9" * 400,
    "123456789012345678901234567890",
    "NaN",
    "Infinity",
    "-Infinity",
    "\ufeff",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    "\x00",
    "\x1f",
    "\x7f",
    '"\x01\x02"',
    '"' + "x" * 50_000 + '"',
    '"' + "é" * 5000 + '"',
    "null",
    "true",
    "[]",
    "{}",
    ",",
    '"',
    "\\",
    "]",
    "}",
    "\u2028",
]

# Values of the wrong type (or odd values of the right one) for any element of a frame.
ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    2.0,
    3.5,
    10**30,
    -(10**25),
    1e308,
    "",
    "2",
    "x" * 300,
    "y" * 20_000,
    "\ud800",
    "\x00",
    [],
    [1, [2, [3]]],
    {},
    {"a": None},
    [[[[[[[[[[[[]]]]]]]]]]]],
]


class FrameFuzzer:
    """Mutated frames as UTF-8 bytes (some on purpose not UTF-8), from a fixed seed."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def frames(self, count: int) -> Iterator[bytes]:
        mutations = [
            self.bit_flips,
            self.truncation,
            self.insertion,
            self.wrong_type,
            self.wrong_type,
            self.odd_unique_id,
            self.odd_shape,
        ]
        for _ in range(count):
            yield self.random.choice(mutations)()

    def seed_text(self) -> str:
        return json.dumps(self.random.choice(SEEDS), separators=(",", ":"))

    def bit_flips(self) -> bytes:
        """A few flipped bits; one flip in twenty touches the high bit (then the text is rarely UTF-8)."""
        data = bytearray(self.seed_text().encode("utf-8"))
        for _ in range(self.random.randint(1, 4)):
            bit = 7 if self.random.random() < 0.05 else self.random.randrange(7)
            data[self.random.randrange(len(data))] ^= 1 << bit
        return bytes(data)

    def truncation(self) -> bytes:
        text = self.seed_text()
        return text[: self.random.randrange(len(text))].encode("utf-8")

    def insertion(self) -> bytes:
        """A JSON edge case spliced in anywhere, or in place of a value."""
        text = self.seed_text()
        insert = self.random.choice(INSERTS)
        at = self.random.randrange(len(text) + 1)
        if self.random.random() < 0.5:
            return (text[:at] + insert + text[at:]).encode("utf-8", "surrogatepass")
        end = min(len(text), at + self.random.randint(1, 8))
        return (text[:at] + insert + text[end:]).encode("utf-8", "surrogatepass")

    def wrong_type(self) -> bytes:
        """A valid-looking frame of any type with one element (or one payload field) of a wrong type."""
        frame: list[Any] = json.loads(json.dumps(self.random.choice(SEEDS)))
        value = self.random.choice(ODD_VALUES)
        position = self.random.randrange(len(frame))
        payload = frame[-1] if frame[0] != 4 else frame[4]
        if isinstance(payload, dict) and payload and self.random.random() < 0.4:
            payload[self.random.choice(list(payload))] = value
        else:
            frame[position] = value
        return self.dumps(frame)

    def odd_unique_id(self) -> bytes:
        """UniqueIds that are long, empty, escaped, or carry controls and lone surrogates."""
        frame: list[Any] = json.loads(json.dumps(self.random.choice(SEEDS)))
        frame[1] = self.random.choice(
            ["", "-1", "x" * 37, "x" * 129, "z" * 100_000, "a\nb", "\ud800", "é" * 200, "/+#", "\x00"]
        )
        return self.dumps(frame)

    def odd_shape(self) -> bytes:
        """Frames with elements missing or added, or that are not arrays at all."""
        frame: list[Any] = json.loads(json.dumps(self.random.choice(SEEDS)))
        choice = self.random.randrange(5)
        if choice == 0:
            frame = frame[: self.random.randrange(len(frame))]
        elif choice == 1:
            frame.extend(self.random.choice(ODD_VALUES) for _ in range(self.random.randint(1, 3)))
        elif choice == 2:
            frame[0] = self.random.choice([0, 1, 5, -2, 99, 10**20, "3", 4.0])
        elif choice == 3:
            return self.dumps({"MessageTypeId": 2, "UniqueId": "u", "Action": "Heartbeat", "Payload": {}})
        else:
            return bytes(self.random.randrange(256) for _ in range(self.random.randint(0, 64)))
        return self.dumps(frame)

    def dumps(self, value: Any) -> bytes:
        """JSON as a careless charge point writes it: NaN allowed, lone surrogates raw or escaped."""
        ensure_ascii = self.random.random() < 0.5
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii, allow_nan=True)
        return text.encode("utf-8", "surrogatepass")
