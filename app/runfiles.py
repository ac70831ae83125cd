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


def tail(path: Path, lines: int, max_bytes: int = 4 << 20, end: int | None = None) -> str:
    """The last ``lines`` lines of a text file (at most ``max_bytes`` read); "" if it does not exist.
    ``end``: the file as it was at that size (what was appended since is left for a follower)."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            end = size if end is None else min(end, size)
            block, data, pos = 64 << 10, b"", end
            while pos > 0 and data.count(b"\n") <= lines and end - pos < max_bytes:
                step = min(block, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text.endswith("\n") else "")
