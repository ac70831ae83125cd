"""GET /runs/{name}/metrics: the run's loss curves from its ``metrics.csv`` (``app/metricsfile.py``), for the
dashboard's charts and for scripts.

Polling it is cheap: the answer carries an ``ETag`` made of the file's mtime and size, and a request with
that ``If-None-Match`` gets a bodiless 304 after one ``stat``. The file is read in the thread pool, never
on the event loop (a long run's first read goes through every row), by one thread per file at a time:
other requests for the same curves wait for that read on the event loop, holding no thread, so callers
polling a huge file cannot take the pool's threads from every other request.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.deps import StoreDep, get_run
from app.metricsfile import DEFAULT_MAX_POINTS, MetricsFiles

router = APIRouter(prefix="/runs", tags=["runs"])


class Curve(BaseModel):
    step: list[float] = Field(description="the global step of each point (x)")
    epoch: list[float | None] = Field(description="the epoch of each point")
    value: list[float] = Field(description="the metric's value at each point (y)")
    points: int = Field(description="how many points the file holds for this metric")
    downsampled: bool = Field(description="true when fewer than `points` are sent (min and max per bucket)")


class RunMetrics(BaseModel):
    name: str
    rows: int = Field(description="rows of metrics.csv read (0: no file yet, or none at all)")
    skipped: int = Field(description="cells left out: not a finite number (a NaN loss)")
    max_points: int
    metrics: dict[str, Curve] = Field(description="one curve per metric column, e.g. train_loss, val_loss")


class _Reads:
    """One asyncio lock per (run directory, max_points) being read, gone when no request holds it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[tuple[str, int], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def lock(self, run_dir: str, max_points: int) -> asyncio.Lock:
        found = self._locks.get((run_dir, max_points))
        if found is None:
            found = self._locks[(run_dir, max_points)] = asyncio.Lock()
        return found


async def get_metrics_files(request: Request) -> MetricsFiles:
    """One reader (and cache) per app, made on first use beside the app's RunFiles."""
    state = request.app.state
    found = getattr(state, "metrics_files", None)
    if found is None:
        found = state.metrics_files = MetricsFiles(state.files.output_dir)
    return found


def _reads(request: Request) -> _Reads:
    state = request.app.state
    found = getattr(state, "metrics_reads", None)
    if found is None:
        found = state.metrics_reads = _Reads()
    return found


MetricsFilesDep = Annotated[MetricsFiles, Depends(get_metrics_files)]


@router.get("/{name}/metrics", response_model=RunMetrics, responses={304: {"description": "unchanged"}})
async def run_metrics(
    name: str,
    request: Request,
    store: StoreDep,
    metrics: MetricsFilesDep,
    max_points: Annotated[
        int, Query(ge=10, le=20_000, description="the most points per metric (longer curves are thinned)")
    ] = DEFAULT_MAX_POINTS,
) -> Any:
    """The run's ``metrics.csv`` as one curve per metric: ``{"metrics": {"train_loss": {"step": [...],
    "epoch": [...], "value": [...]}, "val_loss": {...}}}``. Empty ``metrics`` until the trainer writes
    the file (and for a queued or deleted run); 404 for an unknown run."""
    record = get_run(store, name)
    stamp = metrics.stamp(record.run_dir)
    etag = f'"{stamp[0]:x}-{stamp[1]:x}-{max_points}"' if stamp else f'"none-{max_points}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    async with _reads(request).lock(record.run_dir, max_points):
        curves = await run_in_threadpool(metrics.curves, record.run_dir, max_points)
    body = RunMetrics(name=name, **curves)
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)
