"""The service's side of the reader process (``app/curves/worker.py``): ``submit`` a ``ReadJob``, get a
``concurrent.futures.Future`` of its result.

One process, started at the first job (a service that never meets a big file starts none), fed one job
at a time, in order, by one thread of ours. That thread spends its time blocked on the process's pipe,
which holds no GIL: the parsing's CPU time is the other process's. A process that dies (killed, out of
memory) fails its job with ``ReaderDied``, and the next job starts a fresh one. ``close`` (at the
service's stop) kills it and reaps it: no process outlives the service.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from app.curves.worker import receive, send
from app.metricsfile import FileCurves, ReadJob

log = logging.getLogger("labrun")
ROOT = Path(__file__).resolve().parents[2]  # where ``app`` is imported from


class ReaderDied(Exception):
    """The reader process ended (killed, out of memory, the service stopping) before it answered."""


class ReaderProcess:
    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[ReadJob, Future[FileCurves]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # _proc, _thread, _closed
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The process's id while it runs."""
        with self._lock:
            return self._proc.pid if self._proc is not None else None

    def submit(self, job: ReadJob) -> Future[FileCurves]:
        done: Future[FileCurves] = Future()
        with self._lock:
            if self._closed:
                done.set_exception(ReaderDied("the service is stopping"))
                return done
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="metrics-reader", daemon=True)
                self._thread.start()
        self._jobs.put((job, done))
        return done

    def close(self, timeout: float = 10.0) -> None:
        """Kill the process (a read in flight is lost: its curves are read again at the next start), reap
        it, and end the thread; jobs still queued fail with ``ReaderDied``."""
        with self._lock:
            self._closed = True
            proc, thread = self._proc, self._thread
        if thread is None:
            return
        self._jobs.put(None)
        if proc is not None and proc.poll() is None:
            proc.kill()
        thread.join(timeout)

    def _serve(self) -> None:
        proc: subprocess.Popen[bytes] | None = None
        try:
            while (item := self._jobs.get()) is not None:
                job, done = item
                if not done.set_running_or_notify_cancel():
                    continue
                try:
                    proc = proc if proc is not None and proc.poll() is None else self._spawn()
                    done.set_result(_exchange(proc, job))
                except ReaderDied as exc:
                    done.set_exception(exc)
                    self._drop(proc)
                    proc = None
                except Exception as exc:  # a job or an answer that does not pickle: never left waiting
                    done.set_exception(ReaderDied(f"the metrics.csv reader process failed: {exc!r}"))
                    self._drop(proc)
                    proc = None
        finally:
            self._drop(proc)
            self._fail_queued()  # jobs submitted while it stopped: failed, not left waiting

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._closed:
                raise ReaderDied("the service is stopping")
            # Only the standard library and app/metricsfile.py are imported there (see worker.py).
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "app.curves.worker", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=ROOT,
                close_fds=True,
            )
            log.info("metrics.csv reader process %d started", self._proc.pid)
            return self._proc

    def _drop(self, proc: subprocess.Popen[bytes] | None) -> None:
        _reap(proc)
        with self._lock:
            if self._proc is proc:
                self._proc = None

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(ReaderDied("the service is stopping"))


def _exchange(proc: subprocess.Popen[bytes], job: ReadJob) -> FileCurves:
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        send(proc.stdin, job)
        answer = receive(proc.stdout)
    except (BrokenPipeError, OSError, EOFError):
        answer = None
    if answer is None:
        raise ReaderDied(f"the metrics.csv reader process {_how_it_ended(proc)}")
    kind, value = answer
    if kind != "ok" or not isinstance(value, FileCurves):
        raise ReaderDied(f"the metrics.csv reader process failed: {value}")
    return value


def _how_it_ended(proc: subprocess.Popen[bytes]) -> str:
    try:
        code = proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    if code < 0:
        return f"was killed ({signal.Signals(-code).name})"
    return f"ended (exit code {code})"


def _reap(proc: subprocess.Popen[bytes] | None) -> None:
    """End the process if it runs, wait for it, close its pipes (an unclosed one is a ResourceWarning)."""
    if proc is None:
        return
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):  # a flush into a dead reader's pipe
                pipe.close()
    try:
        proc.wait(5)  # at the end of its stdin, an idle reader ends by itself
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
