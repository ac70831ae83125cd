"""Reading what a run writes: its log (written by the run's log writer, ``trainer/logbound.py``) and its
``progress.json`` (written by the trainer).

Cheap on purpose, because pollers call it on every GET: ``progress.json`` is parsed only when its mtime or
size changed (one ``stat`` otherwise), and a log tail is read backwards from the end of the file.

A log may have been cut to its bound (``LABRUN_MAX_LOG_BYTES``): every read holds a shared lock on it, so
that what it reads and the cut it reports (``LogSlice.layout``) are of the same moment, never of a
compaction half done. Offsets are positions in the file as kept; one handed out before a later cut is
carried over to the new layout when the reader says which cut it had seen (``read_range``'s ``then_cut``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from app.runpaths import open_run_file
from app.statedir import StateDir
from trainer.logbound import LOCK_WAIT_S, LogCut, cut_path, flocked, read_cut

MAX_PROGRESS_BYTES = 1 << 20  # progress.json is a few hundred bytes; a larger one is not read (JSON error)

_PROGRESS_FIELDS = {  # progress.json key -> API key
    "epoch": "epoch",
    "max_epochs": "max_epochs",
    "global_step": "step",
    "total_steps": "total",
    "fraction": "fraction",
    "updated_at": "updated_at",
    "phase": "phase",  # what the trainer is doing through a long phase (trainer/heartbeat.py)
    "phase_done": "phase_done",
    "phase_total": "phase_total",
}


class RunFiles:
    def __init__(self, state: StateDir, cache_size: int = 4096) -> None:
        self.output_dir = state.output_dir
        self.state = state
        self._cache: OrderedDict[str, tuple[tuple[int, int], dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_size
        self._cut_files: dict[str, str] = {}  # run -> its log's cut file (see ``log_cut_bytes``)
        self._lock = threading.Lock()

    def log_path(self, name: str) -> Path:
        return self.state.log(name)

    def log_cut_bytes(self, name: str) -> int | None:
        """Bytes of the run's output cut from its log to keep it within its bound; None: none (a ``stat``
        when there is no cut: this is on the polling path)."""
        cut_file = self._cut_files.get(name)
        if cut_file is None:  # the path, built once per run: pathlib costs more than the stat below
            if len(self._cut_files) >= self._cache_size:
                self._cut_files.clear()
            cut_file = self._cut_files[name] = str(cut_path(self.state.log(name)))
        try:
            if os.stat(cut_file).st_size == 0:  # made empty for a Docker run's writer
                return None
        except OSError:
            return None
        cut = read_cut(self.state.log(name))
        return cut.cut_bytes if cut is not None and cut.cut_bytes else None

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
        try:  # a run's own file: no link or pipe it left in its place is followed, nor a huge file read
            with open_run_file(path) as f:
                data = f.read(MAX_PROGRESS_BYTES + 1)
            if len(data) > MAX_PROGRESS_BYTES:
                raise ValueError("progress.json is too large to be one")
            raw = json.loads(data)
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
    if field == "phase":
        return value[:64] if isinstance(value, str) else None
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
    layout: LogCut | None = None  # where the log was cut to its bound, as it was when read (None: never)
    skipped: int = 0  # bytes of output between the position asked for and ``start`` that were cut since

    @property
    def cut_bytes(self) -> int:
        """Bytes of output cut from the log to keep it within its bound (0: none)."""
        return self.layout.cut_bytes if self.layout else 0

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
        with _open_log(path) as (f, layout):
            size = f.seek(0, os.SEEK_END)
            end = size if end is None else min(end, size)
            if lines is not None and lines <= 0:
                return LogSlice(b"", end, end, size, layout=layout)
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
        return LogSlice(b"", end, end, size, layout=layout)
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
    return LogSlice(data, pos + offset, end, size, cut, layout)


@contextlib.contextmanager
def _open_log(path: Path) -> Iterator[tuple[BinaryIO, LogCut | None]]:
    """The log open for reading under a shared lock (a compaction holds an exclusive one), with its cut as
    it is while the lock is held. A writer stopped mid-compaction (a paused container) is waited for
    ``LOCK_WAIT_S`` at most: the file is then read as it is."""
    with open(path, "rb") as f, flocked(f.fileno(), exclusive=False, wait_s=LOCK_WAIT_S):
        yield f, read_cut(path)


def _after_first_newline(blocks: list[bytes]) -> int:
    """Where the second line starts in the bytes of ``blocks`` (last block first); 0: no newline."""
    seen = 0
    for block in reversed(blocks):
        i = block.find(b"\n")
        if i >= 0:
            return seen + i + 1
        seen += len(block)
    return 0


def read_range(
    path: Path,
    offset: int,
    length: int = LOG_WINDOW_BYTES,
    then_cut: int | None = None,
    whole_lines: bool = True,
) -> LogSlice:
    """Bytes from ``offset`` on, at most ``length``, ending at a line boundary (unless the window holds no
    line end, or reaches the end of the file, or ``whole_lines`` is false): a page of the log; ``end`` is
    where the next page starts. ``then_cut``: the log's ``cut_bytes`` when ``offset`` was handed out; a
    later cut moves it to where those bytes are now (``skipped``: how many after it were cut since)."""
    skipped = 0
    try:
        with _open_log(path) as (f, layout):
            size = f.seek(0, os.SEEK_END)
            if then_cut is not None and layout is not None:
                offset, skipped = layout.moved(offset, then_cut)
            offset = min(max(offset, 0), size)
            f.seek(offset)
            data = f.read(length)
    except OSError:
        return LogSlice(b"", 0, 0, 0)
    if whole_lines and offset + len(data) < size and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]
    return LogSlice(data, offset, offset + len(data), size, layout=layout, skipped=skipped)


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
