"""HTTP ranges (RFC 9110, section 14) of one file: a single range is served; anything else is the whole
file, as the RFC allows. Enough for a client to resume a download where it stopped."""

from __future__ import annotations

import re

from app.errors import RangeNotSatisfiable

_ONE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def requested_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (end exclusive) of the one range asked for; None: the whole file (no Range, one
    that cannot be read, or several ranges: a server may ignore them). RangeNotSatisfiable when it lies
    past the file's end."""
    if not header:
        return None
    match = _ONE_RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # bytes=-N: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _past_end(header, size)
        return max(0, size - n), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last != "" and int(last) < start:
        return None  # not a valid range: ignored
    if start >= size:
        raise _past_end(header, size)
    return start, end


def _past_end(header: str, size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(f"Range {header!r} lies past the file's end: it has {size} bytes", size)


def content_range(start: int, end: int, size: int) -> str:
    return f"bytes {start}-{end - 1}/{size}"
