"""Rules every backend that reads a stored record shares with the reference gateway."""

from __future__ import annotations

import re
from typing import Any

_INTEGER = re.compile(r"[+-]?[0-9]+")


def to_bool(value: Any) -> bool:
    """``is_superuser`` as the reference reads it: ``True``, ``"true"``, an integer >= 1 or an integer's
    text >= 1 are true; everything else (None, ``""``, ``"0"``, ``"TRUE"``, ``"yes"``, 1.0) is false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value >= 1
    if isinstance(value, str):
        return value == "true" or (_INTEGER.fullmatch(value) is not None and int(value) >= 1)
    return False
