"""Durations as people write them: ``6h``, ``90m``, ``1h30m``, ``2d``, ``45s``, or a number of seconds.

Shared by the CLI and the service (the service accepts the same text in a request's ``time_limit``), so it
imports nothing beyond the standard library."""

from __future__ import annotations

import math
import re

_UNITS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")
_WHOLE = re.compile(r"(?:\s*\d+(?:\.\d+)?\s*[dhms])+\s*")


def parse_duration(value: str | float | int) -> float:
    """Seconds; ValueError naming the accepted forms for anything else (or for 0 or less)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            if not _WHOLE.fullmatch(text):
                raise ValueError(
                    f"{value!r} is not a duration: write seconds (3600) or parts with units d, h, m, s "
                    "(6h, 90m, 1h30m, 2d)"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} is not a duration above 0")
    return seconds


def format_duration(seconds: float) -> str:
    """``6 h``, ``1 h 30 min``, ``45 s``: the largest unit and the next one, in whole units."""
    seconds = max(0, round(seconds))
    units = (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1))
    for i, (unit, size) in enumerate(units):
        if seconds >= size or size == 1:
            text = f"{seconds // size} {unit}"
            if size > 1 and (rest := (seconds % size) // units[i + 1][1]):
                text += f" {rest} {units[i + 1][0]}"
            return text
    raise AssertionError("unreachable")
