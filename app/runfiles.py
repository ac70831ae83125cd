"""Reading what a run writes: its log (kept by the launcher) and its ``progress.json`` (written by the trainer).

Cheap on purpose, because pollers call it on every GET: ``progress.json`` is parsed only when its mtime or
size changed (one ``stat`` otherwise), and a log tail is read backwards from the end of the file.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.statedir import StateDir

_PROGRESS_FIELDS = {  # progress.json key -> API key
    "epoch": "epoch",
    "max_epochs": "max_epochs",
    "global_step": "step",
    "total_steps": "total",
    "fraction": "fraction",
    "updated_at": "updated_at",
}


class RunFiles:
    def __init__(self, state: StateDir, cache_size: int = 4096) -> None:
        self.output_dir = state.output_dir
        self.state = state
        self._cache: OrderedDict[str, tuple[tuple[int, int], dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def log_path(self, name: str) -> Path:
        return self.state.log(name)

    def progress(self, run_dir: str) -> dict[str, Any] | None:
        """``{"progress": {...}, "metrics": {...}}`` from the run's progress.json, or None before it exists."""
        path = os.path.join(self.output_dir, run_dir, "progress.json")
        try:
            st = os.stat(path)
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        try:
            with open(path, "rb") as f:
                raw = json.loads(f.read())
        except (OSError, ValueError):
            return hit[1] if hit else None  # caught mid-write: the last good read is still true enough
        if not isinstance(raw, dict):
            return None
        parsed = _parse_progress(raw)
        with self._lock:
            self._cache[path] = (stamp, parsed)
            self._cache.move_to_end(path)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return parsed


def _parse_progress(raw: dict[str, Any]) -> dict[str, Any]:
    """Another process's file: a value of an unexpected type (or a NaN) is left out, never a failed GET."""
    progress = {api: _typed(api, raw.get(key)) for key, api in _PROGRESS_FIELDS.items()}
    reported = raw.get("metrics")
    metrics = {k: _finite(v) for k, v in reported.items() if _scalar(v)} if isinstance(reported, dict) else {}
    for key in ("train_loss", "val_loss"):
        if key in raw and _scalar(raw[key]):
            metrics.setdefault(key, _finite(raw[key]))
    return {"progress": progress, "metrics": metrics}


def _typed(field: str, value: Any) -> Any:
    if isinstance(value, bool):
        return None
    if field == "fraction":
        return _finite(value) if isinstance(value, int | float) else None
    if field == "updated_at":
        return _finite(value) if isinstance(value, int | float | str) else None
    return value if isinstance(value, int) else None  # epoch, max_epochs, step, total


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such a number (a diverged loss) is reported as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


LOG_WINDOW_BYTES = 4 << 20  # the most of a log one answer carries; page with offset= for the rest


@dataclass(frozen=True)
class LogSlice:
    """Part of a log: ``data`` is the file's bytes ``[start, end)`` (of ``size``)."""

    data: bytes
    start: int
    end: int
    size: int
    cut: bool = False  # the first line is cut at its start (one line longer than the window)

    @property
    def truncated(self) -> bool:
        return self.start > 0

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    def utf8(self) -> bytes:
        """The bytes to send as UTF-8 text: as they are when they are (the usual case: no copy), else with
        each invalid sequence replaced. Megabytes of a log go out without a decode and an encode."""
        if self.data.isascii():
            return self.data
        try:
            self.data.decode("utf-8")
            return self.data
        except UnicodeDecodeError:
            return self.text.encode()


def read_tail(
    path: Path, lines: int | None, max_bytes: int = LOG_WINDOW_BYTES, end: int | None = None
) -> LogSlice:
    """The last ``lines`` lines (None: all) of a log, as the file has them (``\n`` ends a line; a ``\r``
    progress update or a form feed does not), within its last ``max_bytes`` bytes, starting at a line
    boundary unless a single line is longer than that. ``end``: the file as it was at that size (what was appended since is
    left for a follower). A file that does not exist reads as empty.

    Linear in the window: blocks are read backwards and each is scanned once, in C. (Growing one buffer
    block by block and re-counting it was quadratic: 100-300 ms of held GIL for a 4 MiB answer, which
    stalled every other request while big logs were read.)"""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            end = size if end is None else min(end, size)
            if lines is not None and lines <= 0:
                return LogSlice(b"", end, end, size)
            # Counting lines holds the GIL (~1 ms a MiB): only a tail that may end inside the window counts
            # (wanted: the lines asked for; None: no counting).
            wanted = lines if lines is not None and lines < max_bytes else None
            blocks: list[bytes] = []  # last block first
            pos, found = end, 0  # found: newlines before the last byte (each starts a line after it)
            # Doubled up to 1 MiB: a short tail reads little, a whole window in few reads.
            block_size = 16 << 10
            while pos > 0 and end - pos < max_bytes and not (wanted is not None and found >= wanted):
                step = min(block_size, pos, max_bytes - (end - pos))
                block_size = min(block_size * 2, 1 << 20)
                pos -= step
                f.seek(pos)
                block = f.read(step)
                if wanted is not None:
                    found += block.count(b"\n", 0, len(block) - 1 if not blocks else len(block))
                blocks.append(block)
            at_line_start = pos == 0 or (f.seek(pos - 1) >= 0 and f.read(1) == b"\n")
    except OSError:
        return LogSlice(b"", 0, 0, 0)
    if not blocks:
        return LogSlice(b"", end, end, size)
    first = blocks[-1]  # the earliest bytes read
    cut = False
    # More lines than asked: skip the oldest, all in the earliest block.
    if wanted is not None and found >= wanted:
        offset = len(first) - len(first.split(b"\n", found - wanted + 1)[-1])
    elif at_line_start:
        offset = 0
    else:  # a partial first line: start at the next line instead, if one starts before the end
        offset = _after_first_newline(blocks)
        if offset == 0 or offset >= end - pos:  # one line longer than the window
            offset, cut = 0, True
    if offset <= len(first):
        data = b"".join([first[offset:], *reversed(blocks[:-1])])
    else:
        data = b"".join(reversed(blocks))[offset:]
    return LogSlice(data, pos + offset, end, size, cut)


def _after_first_newline(blocks: list[bytes]) -> int:
    """Where the second line starts in the bytes of ``blocks`` (last block first); 0: no newline."""
    seen = 0
    for block in reversed(blocks):
        i = block.find(b"\n")
        if i >= 0:
            return seen + i + 1
        seen += len(block)
    return 0


def read_range(path: Path, offset: int, length: int = LOG_WINDOW_BYTES) -> LogSlice:
    """Bytes from ``offset`` on, at most ``length``, ending at a line boundary (unless the window holds no
    line end, or reaches the end of the file): a page of the log; ``end`` is where the next page starts."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            offset = min(max(offset, 0), size)
            f.seek(offset)
            data = f.read(length)
    except OSError:
        return LogSlice(b"", 0, 0, 0)
    if offset + len(data) < size and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]
    return LogSlice(data, offset, offset + len(data), size)


def tail(path: Path, lines: int, max_bytes: int = LOG_WINDOW_BYTES, end: int | None = None) -> str:
    """The text of ``read_tail``."""
    return read_tail(path, lines, max_bytes, end).text


def record_tail(path: Path, lines: int, max_bytes: int) -> str | None:
    """What a failed run's record keeps of its log: at most ``lines`` lines and ``max_bytes`` bytes (one
    huge line must not put megabytes into every answer about the run); None when there is nothing."""
    part = read_tail(path, lines, max_bytes)
    if not part.text:
        return None
    return ("[...] " + part.text) if part.cut else part.text
