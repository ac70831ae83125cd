"""Reading a run's ``metrics.csv`` (Lightning's CSVLogger, written by the trainer in its run directory) as
curves: one ``{"step": [...], "epoch": [...], "value": [...]}`` per metric, at most ``max_points`` each.

The file is sparse: every row has ``epoch`` and ``step`` and only the metrics logged at that moment
(``train_loss`` per step; ``train_loss_epoch`` and ``val_loss`` once per epoch). Lightning appends rows,
and rewrites the whole file with a wider header when a new metric appears.

A run may write millions of rows (a 1.5 GB file of 20 million is not absurd at one row a step), and the
dashboard polls this while the run trains, so a curve costs bounded memory whatever the file's size:

- the file is read in one streaming pass of ``chunk_bytes`` blocks, and only the downsampled points are
  kept (``Curve``): never the rows. The downsampling is min/max per bucket (``downsample`` defines it):
  a loss curve's reader looks for its trend, its noise band and its spikes (a divergence), which the lowest
  and the highest point of each bucket keep and an average or a random sample would lose; the first and
  the last point are always kept, so the curve spans the run;
- the result is cached by the file's (mtime, size) and ``max_points``: one ``stat`` when nothing changed;
- a file that only grew is read from where the last read stopped (same header, same last line there), so
  a long run costs its new rows per poll, not the whole file; a rewritten file is read afresh;
- only complete lines are taken: a row caught mid-write is read on the next poll;
- each file has its own lock: one big file being read never holds another run's curves up;
- a read of more than ``most`` bytes is not made here but handed back as a ``ReadJob``: the service runs it
  in a reader process of its own (``app/curves/``), whose result (the same state, picklable) comes back
  through ``install``; only the rows appended since are then read here.

A cell that is not a finite number (a diverged ``nan`` loss, ``inf``, garbage) is left out of its curve
and counted in ``skipped``: JSON has no NaN, and a chart cannot draw one.
"""

from __future__ import annotations

import copy
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, BinaryIO

from app.runpaths import open_run_file

DEFAULT_MAX_POINTS = 2000
# Small blocks: every C call on one (split, float parsing) holds the GIL, and the event loop waits for it.
CHUNK_BYTES = 256 * 1024
MAX_LINE_BYTES = 1 << 20  # a longer "row" is not one Lightning writes: skipped, so memory stays bounded
CACHE_POINTS = 500_000  # points kept by the cache in all (~100 bytes each), oldest files evicted first
_TAIL_BYTES = 256  # the end of what was read: tells a file that grew from one rewritten since
_AXES = ("epoch", "step")  # columns that place a row; every other column is a metric

# (index of the point in its series, x: the step or else the row, epoch, value)
Point = tuple[int, float, float | None, float]
Place = Callable[[int], tuple[float, float | None]]  # a chunk's j-th point of a series -> (x, epoch)


def bucket_exponent(n: int, max_points: int) -> int:
    """The buckets of a curve of ``n`` points are runs of ``2**k`` consecutive points from the first: k is 0
    (every point kept) while ``n <= max_points``, else the smallest k >= 1 that makes at most
    ``(max_points - 2) // 2`` buckets. Powers of two, so that a growing curve's buckets merge pairwise,
    exactly, as it passes each bound: streaming gives the same points as a read of the whole."""
    if n <= max_points:
        return 0
    buckets = max(1, (max_points - 2) // 2)
    k = 1
    while -(-n >> k) > buckets:  # ceil(n / 2**k)
        k += 1
    return k


def downsample(values: list[float], max_points: int) -> list[int]:
    """The definition the streaming ``Curve`` keeps to: indices of at most ``max_points`` of ``values``, all
    of them when they fit, else the first, the last, and the lowest and the highest (first occurrence) of
    each bucket of ``bucket_exponent`` (in order), so a spike or a dip is never averaged away."""
    n = len(values)
    k = bucket_exponent(n, max_points)
    if k == 0:
        return list(range(n))
    keep = {0, n - 1}
    for start in range(0, n, 1 << k):
        bucket = values[start : start + (1 << k)]
        keep.add(start + bucket.index(min(bucket)))
        keep.add(start + bucket.index(max(bucket)))
    return sorted(keep)


class Curve:
    """One metric's points, fed in order a chunk at a time, of which it keeps exactly ``downsample(all points
    so far, max_points)``: at most ``(max_points - 2) // 2`` buckets of a low and a high point, plus the
    first and the last point, whatever the number of points fed."""

    __slots__ = ("buckets", "first", "k", "last", "max_points", "n")

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self.n = 0  # points fed
        self.k = 0  # buckets of 2**k points
        self.first: Point | None = None
        self.last: Point | None = None
        self.buckets: list[list[Any]] = []  # [bucket number, lowest point, highest point], in order

    def add(self, values: list[float], place: Place) -> None:
        """Feed the next points: their values, and where the j-th of them is (called for kept points only)."""
        m = len(values)
        if m == 0:
            return
        start = self.n
        self.n += m
        k = bucket_exponent(self.n, self.max_points)
        if k > self.k:
            self._regroup(k)

        def point(j: int) -> Point:
            x, epoch = place(j)
            return (start + j, x, epoch, values[j])

        if start == 0:
            self.first = point(0)
        self.last = point(m - 1)
        j = 0
        while j < m:
            number = (start + j) >> k
            end = min(m, ((number + 1) << k) - start)
            bucket = values[j:end]  # min/max/index over a list slice: C loops, not a Python one per point
            low = j + bucket.index(min(bucket))
            high = j + bucket.index(max(bucket))
            low_point = point(low)
            self._put(number, low_point, low_point if high == low else point(high))
            j = end

    def _put(self, number: int, low: Point, high: Point) -> None:
        buckets = self.buckets
        if buckets and buckets[-1][0] == number:
            last = buckets[-1]
            if low[3] < last[1][3]:  # strictly: on a tie the earlier point stays, as in downsample()
                last[1] = low
            if high[3] > last[2][3]:
                last[2] = high
        else:
            buckets.append([number, low, high])

    def _regroup(self, k: int) -> None:
        """Merge the buckets into buckets of ``2**k`` points (aligned at the first, as before)."""
        shift = k - self.k
        old, self.buckets, self.k = self.buckets, [], k
        for number, low, high in old:
            self._put(number >> shift, low, high)

    def points(self) -> list[Point]:
        if self.k == 0:
            return [low for _, low, _ in self.buckets]
        kept = {p[0]: p for _, low, high in self.buckets for p in (low, high)}
        for p in (self.first, self.last):
            if p is not None:
                kept[p[0]] = p
        return [kept[i] for i in sorted(kept)]


@dataclass(eq=False)
class FileCurves:
    """What was read of one file for one ``max_points``; ``offset`` is where the next read starts."""

    max_points: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    header: bytes = b""
    columns: list[str] = field(default_factory=list)
    offset: int = 0
    tail: bytes = b""  # the last bytes before ``offset``
    skipping: bool = False  # inside an overlong line: the rest of it is skipped
    rows: int = 0
    skipped: int = 0
    curves: dict[str, Curve] = field(default_factory=dict)
    stamp: tuple[int, int] | None = None  # of the file when ``answer`` was made
    answer: dict[str, Any] | None = None
    kept: int = 0  # points in ``answer``
    version: int = 0  # reads so far: a job's result is installed only over the state it started from

    # A reader process gets and gives back what was read (never the lock, nor the answer made from it).
    _SENT = ("max_points", "header", "columns", "offset", "tail", "skipping", "rows", "skipped", "curves")

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._SENT}

    def __setstate__(self, values: dict[str, Any]) -> None:
        self.__init__(values["max_points"])  # type: ignore[misc]  # the lock and the defaults, then the rest
        self.__dict__.update(values)

    def take(self, read: FileCurves) -> None:
        """What a reader process read from this state, as this state's own."""
        self.__dict__.update(read.__getstate__())
        self.answer, self.stamp, self.version = None, None, self.version + 1

    def restart(self, header: bytes) -> None:
        columns = header.decode("utf-8", errors="replace").strip().split(",")
        self.header, self.columns, self.offset = header, [c.strip() for c in columns], len(header)
        self.tail, self.skipping, self.rows, self.skipped, self.curves = (
            header[-_TAIL_BYTES:],
            False,
            0,
            0,
            {},
        )


class MetricsFiles:
    """The curves of runs' ``metrics.csv`` files under ``output_dir``, cached per file (thread-safe: the
    route reads through the thread pool). The cache's own lock is held for look-ups only; a read holds the
    lock of its file."""

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        cache_points: int = CACHE_POINTS,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self._files: OrderedDict[tuple[str, int], FileCurves] = OrderedDict()
        self._cache_points = cache_points
        self._chunk_bytes = chunk_bytes
        self._lock = threading.Lock()  # self._files

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
        got = self.answer(run_dir, max_points)
        assert not isinstance(got, ReadJob)  # no bound on the bytes read here
        return got

    def answer(
        self, run_dir: str, max_points: int = DEFAULT_MAX_POINTS, most: int | None = None
    ) -> dict[str, Any] | ReadJob:
        """``curves``, unless more than ``most`` bytes of the file are still to be read: then nothing is
        read, and the ``ReadJob`` says what a reader process should read (``install`` takes its result)."""
        path = self.path(run_dir)
        stamp = self.stamp(run_dir)
        if stamp is None:
            return curves_answer(None, max_points)
        state = self._state(path, max_points)
        with state.lock:
            if state.answer is None or state.stamp != stamp:
                if not _read(state, path, self._chunk_bytes, most=most):
                    # A copy: the job is sent later, from another thread. None: the reader starts afresh.
                    sent = copy.deepcopy(state) if state.header else None
                    return ReadJob(path, max_points, stamp[1], state.version, sent)
                state.answer = curves_answer(state, max_points)
                state.stamp = stamp
                state.version += 1
                state.kept = sum(len(c["value"]) for c in state.answer["metrics"].values())
            answer = state.answer
        self._evict()
        return answer

    def install(self, job: ReadJob, read: FileCurves) -> bool:
        """Take a reader process's result of ``job``: the next ``answer`` reads only the rows written since.
        False (nothing taken) when this file's curves were read here meanwhile."""
        state = self._state(job.path, job.max_points)
        with state.lock:
            if state.version != job.version and state.header:  # (no header: evicted, made afresh)
                return False
            state.take(read)
        return True

    def _state(self, path: str, max_points: int) -> FileCurves:
        with self._lock:
            state = self._files.get((path, max_points))
            if state is None:
                state = self._files[(path, max_points)] = FileCurves(max_points)
            self._files.move_to_end((path, max_points))
            return state

    def _evict(self) -> None:
        """Drop the least recently asked files until the kept points fit (the newest always stays)."""
        with self._lock:
            total = sum(state.kept for state in self._files.values())
            while len(self._files) > 1 and total > self._cache_points:
                _, state = self._files.popitem(last=False)
                total -= state.kept


@dataclass(frozen=True)
class ReadJob:
    """A read too long to make in the service's own process: ``path``'s rows up to byte ``limit`` (its size
    when asked), fed into ``state`` (None: a fresh one for ``max_points``). ``version``: of the state then."""

    path: str
    max_points: int
    limit: int
    version: int
    state: FileCurves | None


def read_job(job: ReadJob, chunk_bytes: int = CHUNK_BYTES) -> FileCurves:
    """What a reader process does with a job: the state, fed with the file's rows up to ``job.limit``."""
    state = job.state if job.state is not None else FileCurves(job.max_points)
    _read(state, job.path, chunk_bytes, limit=job.limit)
    return state


def _read(
    state: FileCurves, path: str, chunk_bytes: int, limit: int | None = None, most: int | None = None
) -> bool:
    """Feed the file's new complete rows (up to byte ``limit``) into ``state``: only the new ones when it
    grew under the same header, else all of them. A file that cannot be read leaves ``state`` as it was.
    False, and nothing read, when that would be more than ``most`` bytes."""
    try:
        with open_run_file(path) as f:  # no link, pipe or device the run left in its place
            header = f.readline(MAX_LINE_BYTES)
            if not header.endswith(b"\n"):
                return True  # the header itself is being written
            size = os.fstat(f.fileno()).st_size if limit is None else limit
            grew = _grew(state, f, header)
            if most is not None and size - (state.offset if grew else len(header)) > most:
                return False
            if not grew:
                state.restart(header)
                f.seek(state.offset)  # _grew may have left f elsewhere, after a tail that differed
            _read_rows(state, f, chunk_bytes, size)
    except OSError:
        pass
    return True


def _grew(state: FileCurves, f: BinaryIO, header: bytes) -> bool:
    """Whether the file is the one read before, longer: same header, and the same bytes before ``offset``."""
    if not state.header or state.header != header or os.fstat(f.fileno()).st_size < state.offset:
        return False
    f.seek(state.offset - len(state.tail))
    return f.read(len(state.tail)) == state.tail


def _read_rows(state: FileCurves, f: BinaryIO, chunk_bytes: int, limit: int) -> None:
    pending = b""  # the start of a line whose end is not read yet
    while block := f.read(max(0, min(chunk_bytes, limit - f.tell()))):
        data = pending + block
        if state.skipping:
            end = data.find(b"\n") + 1
            state.offset += end if end else len(data)
            data = data[end:] if end else b""
            state.skipping = end == 0
            state.skipped += 1 if end else 0
        cut = data.rfind(b"\n") + 1
        if cut:
            feed_rows(state, data[:cut])
            state.offset += cut
            state.tail = data[max(0, cut - _TAIL_BYTES) : cut]
        pending = data[cut:]
        if len(pending) > MAX_LINE_BYTES:
            state.offset += len(pending)
            state.skipping, state.tail, pending = True, b"", b""


@dataclass
class _Chunk:
    """Complete rows, split: the step and epoch cells of each row, and per metric the rows that have a
    finite value and those values."""

    rows: int
    steps: list[bytes] | None
    epochs: list[bytes] | None
    series: list[tuple[str, list[int], list[float]]]
    skipped: int = 0


def feed_rows(state: FileCurves, data: bytes) -> None:
    """Feed complete rows (whole lines of the file, after its header) into ``state``'s curves."""
    chunk = _split_fast(data, state.columns) or _split_rows(data, state.columns)
    first_row = state.rows
    # New curves in the order of their first point, as a row-by-row reader would meet them.
    for name, rows, values in sorted(chunk.series, key=lambda s: s[1][0]):
        curve = state.curves.get(name)
        if curve is None:
            curve = state.curves[name] = Curve(state.max_points)
        curve.add(values, _placer(chunk, rows, first_row))
    state.rows += chunk.rows
    state.skipped += chunk.skipped


def _placer(chunk: _Chunk, rows: list[int], first_row: int) -> Place:
    def place(j: int) -> tuple[float, float | None]:
        row = rows[j]
        step = _number(chunk.steps[row]) if chunk.steps is not None else None
        epoch = _number(chunk.epochs[row]) if chunk.epochs is not None else None
        return (step if step is not None else float(first_row + row), epoch)

    return place


def _split_fast(data: bytes, columns: list[str]) -> _Chunk | None:
    """The rows as Lightning writes them (every row has every column, numbers only), split column-wise by
    C loops (split, slices, ``map(float)``): about 20 million rows a minute on one core, where a Python
    loop per row takes several times as long. None when the rows are not all like that."""
    width = len(columns)
    n = data.count(b"\n")
    # The csv module that Lightning writes with ends rows with \r\n: either ending becomes a separator.
    end = b"\r\n" if data.count(b"\r\n") == n else b"\n"
    cells = data.replace(end, b",").split(b",")
    if not width or len(cells) != n * width + 1:
        return None  # a blank or short row: read row by row
    del cells[-1]
    series, skipped = [], 0
    for at, name in _metric_columns(columns):
        column = cells[at::width]
        rows = list(compress(range(n), column))  # the rows with a cell for this metric
        if not rows:
            continue
        try:
            values = list(map(float, filter(None, column)))
        except ValueError:
            return None  # a cell that is no number: read row by row, which skips just that cell
        if not math.isfinite(sum(values)):  # some value is NaN or infinite (rarely: a sum that overflows)
            pairs = [(r, v) for r, v in zip(rows, values, strict=True) if math.isfinite(v)]
            skipped += len(values) - len(pairs)
            rows, values = [r for r, _ in pairs], [v for _, v in pairs]
        series.append((name, rows, values))
    steps = cells[columns.index("step") :: width] if "step" in columns else None
    epochs = cells[columns.index("epoch") :: width] if "epoch" in columns else None
    return _Chunk(n, steps, epochs, [s for s in series if s[1]], skipped)


def _split_rows(data: bytes, columns: list[str]) -> _Chunk:
    """Any rows, one at a time: blank lines are no rows, a missing or empty cell is no point, a cell that
    is no finite number is skipped."""
    lines = [line.split(b",") for line in data.split(b"\n") if line.strip()]
    series, skipped = [], 0
    for at, name in _metric_columns(columns):
        rows, values = [], []
        for row, cells in enumerate(lines):
            if at >= len(cells) or not cells[at].strip():
                continue
            value = _number(cells[at])
            if value is None:
                skipped += 1
                continue
            rows.append(row)
            values.append(value)
        if rows:
            series.append((name, rows, values))

    def column(name: str) -> list[bytes] | None:
        if name not in columns:
            return None
        at = columns.index(name)
        return [cells[at] if at < len(cells) else b"" for cells in lines]

    return _Chunk(len(lines), column("step"), column("epoch"), series, skipped)


def _metric_columns(columns: list[str]) -> list[tuple[int, str]]:
    return [(i, name) for i, name in enumerate(columns) if name not in _AXES and name]


def _number(cell: bytes) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def curves_answer(state: FileCurves | None, max_points: int) -> dict[str, Any]:
    """The answer (the route's body but its name) for what ``state`` read; None: no file, no rows."""
    if state is None:
        return {"rows": 0, "skipped": 0, "max_points": max_points, "metrics": {}}
    metrics = {}
    for name, curve in state.curves.items():
        kept = curve.points()
        metrics[name] = {
            "step": [_int(p[1]) for p in kept],
            "epoch": [_int(p[2]) for p in kept],
            "value": [p[3] for p in kept],
            "points": curve.n,
            "downsampled": len(kept) < curve.n,
        }
    return {"rows": state.rows, "skipped": state.skipped, "max_points": max_points, "metrics": metrics}


def _int(x: float | None) -> float | int | None:
    return int(x) if x is not None and x.is_integer() else x
