"""Peer-supplied text made fit for a log line: bounded in bytes, on one line.

A charge point chooses its frames, UniqueIds, actions, close reasons, paths and headers; a log line
quoting them must not grow with them (the gateway's rule: at most 1 KB of peer text per line) nor
let them forge further lines.
"""

from __future__ import annotations

import re

# What a log line must not carry raw: C0 and C1 controls (newlines included), the Unicode line
# separators and lone surrogates (which no UTF-8 log file can hold).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

# Sizes for the usual fields, so that a line with a charge point id (at most 256 bytes), a frame, a
# UniqueId and a reason stays under 1 KB of peer text.
ID_BYTES = 64
TEXT_BYTES = 160
FRAME_BYTES = 384


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clip(value: object, limit: int = TEXT_BYTES) -> str:
    """``value`` as text of at most ``limit`` UTF-8 bytes plus a short note of the length cut.

    Only the first ``limit`` characters are looked at, so a megabyte costs what a short text does."""
    text = value if isinstance(value, str) else str(value)
    head = _UNSAFE.sub(_escape, text[:limit])
    data = head.encode("utf-8")
    if len(data) > limit:
        head = data[:limit].decode("utf-8", "ignore")
    elif len(text) <= limit:
        return head
    return f"{head}...({len(text)} characters)"
