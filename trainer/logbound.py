"""A run's log, bounded: the one writer of every run's log, whatever launched it.

The process that owns a run's output (``app/launchers/run_wrapper.py`` for local and Slurm runs; inside a
Docker container, this module as the entrypoint: ``python -m trainer.logbound -- COMMAND...``) reads the
trainer's stdout and stderr from a pipe and writes them with ``BoundedLog``. Without a bound
(``LABRUN_MAX_LOG_BYTES`` unset or 0) that is a plain append. With a bound B the file never grows past B
(plus one marker line): once it would, it is compacted in place to

    its first ~B/2 bytes (the head, ending at a line end where one is near) | a marker line | its last ~B/4 bytes

and writing goes on at its end; the next compaction comes after another ~B/4 bytes (so each byte of
output is copied at most once more). The marker says how many bytes of output were cut in all:
``[labrun: N bytes of output cut here ...]``.

Readers (the service) see the file as kept: a byte offset is a position in the file as it is now. The cut
is described by ``<log>.cut`` (``LogCut``: where the head ends, how many bytes were cut), rewritten in
place with each compaction. A compaction and the rewrite of ``.cut`` happen under an exclusive ``flock``
on the log; a reader that holds a shared one sees the file and its ``.cut`` agree. Positions handed out
before a compaction can be carried over to the new layout (``LogCut.moved``): a position in the head stays
where it is, one in the tail moves down with it, and one whose bytes were cut since goes to the start of
the kept tail, saying how many bytes of output it missed.

Standard library only: the Slurm wrapper imports it on the nodes, and the trainer image runs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from trainer.runenv import RunEnv, RunEnvError

MIN_BOUND = 64 << 10  # a smaller bound would keep almost nothing but markers
CHUNK = 1 << 20  # bytes read from the pipe, and copied during a compaction, at a time
STATE_BYTES = 256  # ``.cut`` is one JSON record padded to this size, rewritten with one pwrite
LOCK_WAIT_S = 5.0  # how long a reader waits for a compaction before it reads the file as it is
DRAIN_S = 5.0  # after the trainer's group is gone, how long the rest of the pipe may take to copy


def cut_path(log: Path) -> Path:
    """The file beside ``log`` that says where it was cut (absent or empty: it was not)."""
    return log.with_name(log.name + ".cut")


def marker(cut_bytes: int, lead: bool) -> bytes:
    """The line that stands where ``cut_bytes`` bytes of output were cut. ``lead``: the head ends inside a
    line, so the marker starts a line of its own."""
    text = (
        f"[labrun: {cut_bytes} bytes of output cut here; the log keeps its beginning and its end "
        "(LABRUN_MAX_LOG_BYTES)]\n"
    )
    return (b"\n" if lead else b"") + text.encode()


@dataclass(frozen=True)
class LogCut:
    """Where a bounded log was cut: ``[0, head_end)`` is the head as written, a marker line follows, and
    the kept tail starts at ``tail_start``. ``cut_bytes``: bytes of output left out, in all."""

    head_end: int
    cut_bytes: int
    lead: bool = False

    @property
    def marker(self) -> bytes:
        return marker(self.cut_bytes, self.lead)

    @property
    def tail_start(self) -> int:
        return self.head_end + self._marker_bytes(self.cut_bytes)

    def moved(self, offset: int, then_cut: int) -> tuple[int, int]:
        """(where ``offset`` is now, bytes of output after it that were cut since): ``offset`` is a position
        handed out when ``then_cut`` bytes had been cut (0: before any cut)."""
        if then_cut == self.cut_bytes or offset <= self.head_end:
            return offset, 0  # the same layout, or in the head, which never moves
        # Its place in the output as written; one inside the old marker: the old tail's start.
        written = max(offset - self._marker_bytes(then_cut), self.head_end) + then_cut
        now = written - self.cut_bytes + self._marker_bytes(self.cut_bytes)
        if now < self.tail_start:
            return self.tail_start, self.tail_start - now
        return now, 0

    def _marker_bytes(self, cut_bytes: int) -> int:
        """The marker's length in the layout of ``cut_bytes`` (none before the first cut)."""
        return len(marker(cut_bytes, self.lead)) if cut_bytes else 0

    def encode(self) -> bytes:
        record = json.dumps({"head_end": self.head_end, "cut_bytes": self.cut_bytes, "lead": self.lead})
        return record.encode().ljust(STATE_BYTES - 1) + b"\n"


def read_cut(log: Path) -> LogCut | None:
    """The log's ``LogCut``, or None when it was never cut (or ``.cut`` cannot be read)."""
    try:
        with open(cut_path(log), "rb") as f:
            raw = json.loads(f.read(STATE_BYTES) or b"null")
        return LogCut(int(raw["head_end"]), int(raw["cut_bytes"]), bool(raw.get("lead")))
    except (OSError, ValueError, TypeError, KeyError):
        return None


@contextlib.contextmanager
def flocked(fd: int, exclusive: bool, wait_s: float | None = None) -> Iterator[bool]:
    """Hold a ``flock`` on ``fd`` (shared or exclusive) while inside; yields whether it is held. A
    filesystem without locks (NFS without a lock manager) gives none: the caller goes on without.
    ``wait_s``: give up waiting after that long (a reader must not hang behind a stopped writer)."""
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    held = False
    try:
        if wait_s is None:
            fcntl.flock(fd, mode)
            held = True
        else:
            held = _try_lock(fd, mode, wait_s)
    except OSError:
        held = False
    try:
        yield held
    finally:
        if held:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)


def _try_lock(fd: int, mode: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


class BoundedLog:
    """Appends to a run's log, keeping it within ``max_bytes`` (None or 0: no bound). One writer per log
    at a time (an attempt's wrapper); an earlier attempt's cut is carried on."""

    def __init__(self, path: Path, max_bytes: int | None) -> None:
        self.path = path
        self.max_bytes = max(max_bytes, MIN_BOUND) if max_bytes else 0
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.cut = read_cut(path)

    def write(self, data: bytes) -> None:
        """Append ``data`` (compacting first whenever the bound is reached); OSError as ``os.write``."""
        view = memoryview(data)
        while view:
            room = self._limit() - self.size if self.max_bytes else len(view)
            if room <= 0:
                self._compact()
                continue
            written = os.write(self.fd, view[:room])
            self.size += written
            view = view[written:]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def _limit(self) -> int:
        """The size at which the file is compacted: the bound, or more where an earlier attempt (under a
        larger bound) left a longer head, so that a compaction always leaves room to write."""
        tail_start = self.cut.tail_start if self.cut else 0
        return max(self.max_bytes, tail_start + 2 * (self.max_bytes // 4))

    def _compact(self) -> None:
        """Head, marker, the last ~B/4 bytes: in place, under an exclusive lock, ``.cut`` rewritten too."""
        rw = os.open(self.path, os.O_RDWR)  # positioned writes: an O_APPEND descriptor ignores offsets
        try:
            with flocked(rw, exclusive=True):
                size = os.fstat(rw).st_size  # another appender (a crash message) may have added to it
                before = self.cut or self._first_cut(rw)
                keep = self.max_bytes // 4
                keep_from = _line_start(rw, max(size - keep, before.tail_start), size - keep // 2)
                after = LogCut(before.head_end, before.cut_bytes + keep_from - before.tail_start, before.lead)
                _copy_down(rw, keep_from, size, after.tail_start)
                os.pwrite(rw, after.marker, after.head_end)
                self.size = after.tail_start + size - keep_from
                os.ftruncate(rw, self.size)
                self._save(after)
                self.cut = after
        finally:
            os.close(rw)

    def _first_cut(self, fd: int) -> LogCut:
        """Where the head ends: after the last line end in its second half, else at B/2 exactly."""
        half = self.max_bytes // 2
        window = os.pread(fd, half - half // 2, half // 2)
        newline = window.rfind(b"\n")
        if newline < 0:
            return LogCut(half, 0, lead=True)
        return LogCut(half // 2 + newline + 1, 0)

    def _save(self, cut: LogCut) -> None:
        """Rewrite ``.cut`` in place (one pwrite of a fixed size: the launcher may have created it for this
        writer, in a folder the writer may not create files in). Without it the marker still tells."""
        try:
            fd = os.open(cut_path(self.path), os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            os.pwrite(fd, cut.encode(), 0)
        except OSError:
            pass
        finally:
            os.close(fd)


def _line_start(fd: int, pos: int, before: int) -> int:
    """``pos``, moved on to the start of the next line if one starts before ``before``."""
    if pos <= 0 or pos >= before or os.pread(fd, 1, pos - 1) == b"\n":
        return pos
    newline = os.pread(fd, before - pos, pos).find(b"\n")
    return pos + newline + 1 if newline >= 0 else pos


def _copy_down(fd: int, start: int, end: int, to: int) -> None:
    """Move ``[start, end)`` of the file down to ``to`` (``to <= start``), front first, so that no byte is
    overwritten before it is read."""
    while start < end:
        block = os.pread(fd, min(CHUNK, end - start), start)
        if not block:
            return
        os.pwrite(fd, block, to)
        start += len(block)
        to += len(block)


class OutputCopy:
    """A pipe for a child's stdout and stderr (``write_fd``), copied into a ``BoundedLog`` by a thread.

    A write the log refuses (a full disk) closes the pipe: the trainer's next write fails as it would
    have failed on the file itself, and the run ends the way it always did on a full disk."""

    def __init__(self, log: BoundedLog) -> None:
        self.log = log
        self.read_fd, self.write_fd = os.pipe()
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._copy, name="labrun-log", daemon=True)

    def start(self) -> None:
        """Once the child holds ``write_fd``: only the child writes to the pipe, so it ends with it."""
        os.close(self.write_fd)
        self._thread.start()

    def finish(self) -> None:
        """Copy what is left (after the child's whole group is gone), then close the log. A process that
        escaped the group and holds the pipe open is not waited for; the log then stays open (closed, its
        descriptor could be reused by the next file this process writes, and the copy would go there)."""
        self._thread.join(DRAIN_S)
        if not self._thread.is_alive():
            self.log.close()

    def _copy(self) -> None:
        try:
            while chunk := os.read(self.read_fd, CHUNK):
                self.log.write(chunk)
        except OSError as exc:
            self.error = exc
        finally:
            os.close(self.read_fd)


def main(argv: list[str]) -> int:
    """A Docker run's entrypoint: ``python -m trainer.logbound -- COMMAND...``: COMMAND's output goes to
    ``LABRUN_LOG_PATH``, bounded by ``LABRUN_MAX_LOG_BYTES``; SIGTERM and SIGINT are passed on to its
    process group; the exit status is COMMAND's (128 + N for a signal N, as a shell reports it)."""
    command = argv[2:] if len(argv) > 2 and argv[1] == "--" else []
    try:
        env = RunEnv.from_env()
    except RunEnvError as exc:
        print(f"labrun: {exc}", file=sys.stderr)
        return 2
    if not command or env.log_path is None:
        print("usage: LABRUN_LOG_PATH=FILE python -m trainer.logbound -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    pending: list[int] = []  # signals that arrive before the command exists
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda s, _: pending.append(s))
    copy = OutputCopy(BoundedLog(env.log_path, env.max_log_bytes))
    try:
        child = subprocess.Popen(command, stdout=copy.write_fd, stderr=copy.write_fd, start_new_session=True)
    except OSError as exc:
        copy.log.write(f"labrun: could not start {command[0]!r}: {exc}\n".encode())
        return 127
    copy.start()

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    for held in pending:
        forward(held, None)
    code = child.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    copy.finish()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
