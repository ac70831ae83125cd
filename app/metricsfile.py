"""Reading a run's ``metrics.csv`` (Lightning's CSVLogger, written by the trainer in its run directory) as
curves: one ``{"step": [...], "epoch": [...], "value": [...]}`` per metric, at most ``max_points`` each.

The file is sparse: every row has ``epoch`` and ``step`` and only the metrics logged at that moment
(``train_loss`` per step; ``train_loss_epoch`` and ``val_loss`` once per epoch). Lightning appends rows,
and rewrites the whole file with a wider header when a new metric appears.

Cheap on purpose, because the dashboard polls it while a run trains:

- one ``stat`` when nothing changed: the answer is cached by the file's (mtime, size) and ``max_points``;
- a file that only grew is read from where the last read stopped (same header, longer file), so a long
  run costs its new rows, not the whole file, per poll; a rewritten header means a fresh read;
- only complete lines are taken: a row caught mid-write is read on the next poll.

A cell that is not a finite number (a diverged ``nan`` loss, ``inf``, garbage) is left out of its curve
and counted in ``skipped``: JSON has no NaN, and a chart cannot draw one.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_POINTS = 2000
_AXES = ("epoch", "step")  # columns that place a row; every other column is a metric


@dataclass
class _Series:
    step: list[float] = field(default_factory=list)
    epoch: list[float | None] = field(default_factory=list)
    value: list[float] = field(default_factory=list)


@dataclass
class _Parsed:
    """What was read of one file so far; ``offset`` is where the next read starts."""

    header: bytes
    columns: list[str]
    offset: int
    rows: int = 0
    skipped: int = 0
    series: dict[str, _Series] = field(default_factory=dict)


class MetricsFiles:
    """The curves of runs' ``metrics.csv`` files under ``output_dir``, cached per file (thread-safe: the
    route reads through the thread pool)."""

    def __init__(self, output_dir: str | os.PathLike[str], cache_size: int = 64) -> None:
        self.output_dir = os.fspath(output_dir)
        self._parsed: OrderedDict[str, _Parsed] = OrderedDict()
        self._answers: OrderedDict[tuple[str, int], tuple[tuple[int, int], dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # the caches
        self._reading = threading.Lock()  # a file's rows are parsed into one _Parsed: one reader at a time

    def path(self, run_dir: str) -> str:
        return os.path.join(self.output_dir, run_dir, "metrics.csv")

    def stamp(self, run_dir: str) -> tuple[int, int] | None:
        """(mtime_ns, size) of the file, or None when there is none: what an ETag is made of."""
        try:
            st = os.stat(self.path(run_dir))
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def curves(self, run_dir: str, max_points: int = DEFAULT_MAX_POINTS) -> dict[str, Any]:
        """``{"rows", "skipped", "max_points", "metrics": {name: {"step", "epoch", "value", "points",
        "downsampled"}}}``; no file (not started, a run that logs nothing, deleted files) reads as no rows."""
        path = self.path(run_dir)
        stamp = self.stamp(run_dir)
        if stamp is None:
            return _answer(None, max_points)
        key = (path, max_points)
        with self._lock:
            hit = self._answers.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        with self._reading:
            with self._lock:
                known = self._parsed.get(path)
            parsed = _read(path, known)
            answer = _answer(parsed, max_points)
            with self._lock:
                if parsed is not None:
                    _remember(self._parsed, path, parsed, self._cache_size)
                _remember(self._answers, key, (stamp, answer), self._cache_size)
        return answer


def _remember(cache: OrderedDict, key: Any, value: Any, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


def _read(path: str, known: _Parsed | None) -> _Parsed | None:
    """The file's rows: only the new ones when it grew under the same header, else all of them."""
    try:
        with open(path, "rb") as f:
            header = f.readline()
            if not header.endswith(b"\n"):
                return known  # the header itself is being written
            if known is not None and known.header == header and os.fstat(f.fileno()).st_size >= known.offset:
                f.seek(known.offset)
                parsed = known
            else:
                columns = header.decode("utf-8", errors="replace").strip().split(",")
                parsed = _Parsed(header=header, columns=[c.strip() for c in columns], offset=len(header))
            data = f.read()
    except OSError:
        return known
    complete = data[: data.rfind(b"\n") + 1]  # a row caught mid-write waits for the next read
    if complete:
        _parse_rows(parsed, complete.decode("utf-8", errors="replace"))
        parsed.offset += len(complete)
    return parsed


def _parse_rows(parsed: _Parsed, text: str) -> None:
    columns = parsed.columns
    step_at = columns.index("step") if "step" in columns else None
    epoch_at = columns.index("epoch") if "epoch" in columns else None
    metrics = [(i, name) for i, name in enumerate(columns) if name not in _AXES and name]
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = line.split(",")  # Lightning writes numbers only: no quoted cells
        parsed.rows += 1
        step = _number(cells, step_at)
        x = step if step is not None else float(parsed.rows - 1)
        epoch = _number(cells, epoch_at)
        for i, name in metrics:
            if i >= len(cells) or not cells[i].strip():
                continue
            value = _number(cells, i)
            if value is None:
                parsed.skipped += 1
                continue
            series = parsed.series.get(name)
            if series is None:
                series = parsed.series[name] = _Series()
            series.step.append(x)
            series.epoch.append(epoch)
            series.value.append(value)


def _number(cells: list[str], at: int | None) -> float | None:
    if at is None or at >= len(cells):
        return None
    try:
        value = float(cells[at])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _answer(parsed: _Parsed | None, max_points: int) -> dict[str, Any]:
    if parsed is None:
        return {"rows": 0, "skipped": 0, "max_points": max_points, "metrics": {}}
    metrics = {}
    for name, series in parsed.series.items():
        keep = downsample(series.value, max_points)
        metrics[name] = {
            "step": [_int(series.step[i]) for i in keep],
            "epoch": [_int(series.epoch[i]) for i in keep],
            "value": [series.value[i] for i in keep],
            "points": len(series.value),
            "downsampled": len(keep) < len(series.value),
        }
    return {"rows": parsed.rows, "skipped": parsed.skipped, "max_points": max_points, "metrics": metrics}


def _int(x: float | None) -> float | int | None:
    return int(x) if x is not None and x.is_integer() else x


def downsample(values: list[float], max_points: int) -> list[int]:
    """Indices of at most ``max_points`` of ``values`` that keep the curve's shape: the first and the last
    point, and the lowest and the highest of each of ``(max_points - 2) // 2`` equal buckets in between
    (in order), so a spike or a dip is never averaged away."""
    n = len(values)
    if n <= max_points:
        return list(range(n))
    if max_points < 4:
        return [0, n - 1][:max_points]
    buckets = (max_points - 2) // 2
    inner = n - 2
    keep = [0]
    for b in range(buckets):
        lo = 1 + b * inner // buckets
        hi = 1 + (b + 1) * inner // buckets
        if lo >= hi:
            continue
        window = range(lo, hi)
        low = min(window, key=values.__getitem__)
        high = max(window, key=values.__getitem__)
        keep.extend(sorted({low, high}))
    keep.append(n - 1)
    return keep
