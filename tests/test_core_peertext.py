"""clip: peer-supplied text bounded and kept on one line for the log."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ocppgw.core.peertext import clip


class ClipTests(SynchronousTestCase):
    """What clip keeps, escapes and notes."""

    def test_short_text_unchanged(self) -> None:
        """Text within the limit comes back as it was."""
        self.assertEqual(clip("BootNotification"), "BootNotification")
        self.assertEqual(clip("é" * 10, 20), "é" * 10)

    def test_long_text_cut_with_its_length(self) -> None:
        """A long text keeps its first bytes and says how long it was."""
        self.assertEqual(clip("x" * 1_000_000, 10), "xxxxxxxxxx...(1000000 characters)")

    def test_bytes_not_characters(self) -> None:
        """The limit counts UTF-8 bytes; a multi-byte character is never cut in half."""
        clipped = clip("€" * 100, 10)
        self.assertEqual(clipped, "€€€...(100 characters)")

    def test_one_line(self) -> None:
        """Newlines, other controls, line separators and lone surrogates are escaped."""
        self.assertEqual(clip("a\nb\r\x00\x85\u2028\ud800"), "a\\x0ab\\x0d\\x00\\x85\\u2028\\ud800")
        clip("\ud800" * 500).encode("utf-8")

    def test_escapes_within_the_limit(self) -> None:
        """Escaping cannot make the result outgrow the limit."""
        clipped = clip("\n" * 100, 20)
        self.assertEqual(clipped, "\\x0a" * 5 + "...(100 characters)")

    def test_not_text(self) -> None:
        """Anything else is shown as str shows it."""
        self.assertEqual(clip(None), "None")
        self.assertEqual(clip(12), "12")
