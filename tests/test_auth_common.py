"""``ocppgw.auth.common.to_bool``: the reference's ``is_superuser`` coercion, which every backend uses."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from ocppgw.auth.common import to_bool


class ToBoolTests(TestCase):
    def test_true_values(self) -> None:
        """true, "true", integers >= 1 and decimal integer strings >= 1 (as text or bytes)."""
        for value in (True, "true", 1, 2, 10**30, "1", "+1", "007", "42", b"1", b"true", bytearray(b"3")):
            self.assertIs(to_bool(value), True, value)

    def test_false_values(self) -> None:
        """Everything else: null, "", "0", "TRUE", "yes", floats, negative, padded or non-ASCII digits."""
        for value in (
            False, None, "", "0", "-1", 0, -5, "TRUE", "True", "yes", 1.0, "1.0", " 1", "1 ", "1_0",
            "\u0661", b"\xff", b"0", [], {}, [1],
        ):  # fmt: skip
            self.assertIs(to_bool(value), False, value)
