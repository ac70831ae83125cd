"""What GET /runs/{name}/metrics answers: ``CurveReads.curves``, for one app (one per service).

- Curves read before, and files whose unread part is small (up to ``worker_bytes``: a poll of a growing
  run, any file of a few MB), are answered from ``MetricsFiles`` in the thread pool, as fast as ever.
- A bigger read (a huge file's first one) goes to the reader process (``ReaderProcess``): the answer waits
  for it up to ``wait_s``, then is a curve sampled from the file (``sample_curves``, ``"partial": true``)
  until the full one is there; the request never waits longer. The reader's result goes into the cache,
  and the rows written meanwhile are read here, as any growth is.
- One read per file and ``max_points`` at a time: the requests for the same curves wait for the one that
  reads (on the event loop, holding no thread); other files' curves are never held up by it.
- A reader process that dies fails its read: the request that learns it gets ``CurvesUnavailable`` (503),
  once; the next request reads again, in a fresh process.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from concurrent.futures import Future
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.curves.reader import ReaderDied, ReaderProcess
from app.curves.sample import sample_curves
from app.errors import CurvesUnavailable
from app.metricsfile import FileCurves, MetricsFiles, ReadJob

WORKER_BYTES = 4 << 20  # ~50 ms of parsing here; more goes to the reader process
WAIT_S = 0.5  # a full answer that comes this soon is worth the wait (no partial curve, then the full one)

Key = tuple[str, int]  # (run directory, max_points)


class CurveReads:
    def __init__(
        self,
        files: MetricsFiles,
        reader: ReaderProcess | None = None,
        worker_bytes: int = WORKER_BYTES,
        wait_s: float = WAIT_S,
    ) -> None:
        self.files = files
        self.reader = reader or ReaderProcess()
        self.worker_bytes = worker_bytes
        self.wait_s = wait_s
        self._running: dict[Key, tuple[ReadJob, Future[FileCurves]]] = {}
        self._partial: dict[Key, tuple[tuple[int, int], dict[str, Any]]] = {}  # by the file's stamp
        self._locks: weakref.WeakValueDictionary[Key, asyncio.Lock] = weakref.WeakValueDictionary()

    async def curves(self, run_dir: str, max_points: int) -> dict[str, Any]:
        """``MetricsFiles.curves``' answer, or a partial one (``"partial": true``) while a reader process
        reads the file. Raises ``CurvesUnavailable`` when that process died."""
        key = (run_dir, max_points)
        async with self._lock(key):
            for _ in range(4):  # each round but the last ends a read by the reader process
                running = self._running.get(key)
                if running is None:
                    got = await run_in_threadpool(self.files.answer, run_dir, max_points, self.worker_bytes)
                    if not isinstance(got, ReadJob):
                        return got
                    running = self._running[key] = (got, self.reader.submit(got))
                if not await _wait(running[1], self.wait_s):
                    break
                self._finish(key, *running)
            return await self._sampled(key)

    def close(self) -> None:
        self.reader.close()

    def _finish(self, key: Key, job: ReadJob, done: Future[FileCurves]) -> None:
        del self._running[key]
        self._partial.pop(key, None)
        try:
            read = done.result()
        except ReaderDied as exc:
            raise CurvesUnavailable(
                f"reading {job.path.rsplit('/', 1)[-1]} failed: {exc}; ask again to read it afresh"
            ) from None
        self.files.install(job, read)

    async def _sampled(self, key: Key) -> dict[str, Any]:
        """The partial answer, made once per state of the file while the full read runs."""
        run_dir, max_points = key
        stamp = self.files.stamp(run_dir)
        if stamp is None:
            return await run_in_threadpool(self.files.curves, run_dir, max_points)  # gone: no rows
        found = self._partial.get(key)
        if found is None or found[0] != stamp:
            path = self.files.path(run_dir)
            found = self._partial[key] = (stamp, await run_in_threadpool(sample_curves, path, max_points))
        return found[1]

    def _lock(self, key: Key) -> asyncio.Lock:
        found = self._locks.get(key)
        if found is None:
            found = self._locks[key] = asyncio.Lock()
        return found


async def _wait(done: Future[Any], timeout: float) -> bool:
    """Whether ``done`` is done within ``timeout`` s, waited for on the event loop. (Not ``wrap_future``:
    its future, cancelled at the timeout, would cancel a job still queued.)"""
    if done.done():
        return True
    loop = asyncio.get_running_loop()
    woken: asyncio.Future[None] = loop.create_future()

    def wake(_: Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(lambda: None if woken.done() else woken.set_result(None))

    done.add_done_callback(wake)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(woken, timeout)
    return done.done()
