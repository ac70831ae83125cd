"""GET /runs/{name}/metrics: the run's loss curves from its ``metrics.csv`` (``app/metricsfile.py``), for the
dashboard's charts and for scripts.

Polling it is cheap: the answer carries an ``ETag`` made of the file's mtime and size, and a request with
that ``If-None-Match`` gets a bodiless 304 after one ``stat``. Small reads run in the thread pool, never on
the event loop; a big one (a long run's first, through millions of rows) runs in a reader process of the
service's, and meanwhile the answer is a curve sampled from the file, marked ``"partial": true``
(``app/curves/reads.py``). Every request is answered within about a second, whatever the file's size, and
one file's read never holds up another's curves, nor any other request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field

from app.api.deps import StoreDep, get_run
from app.curves.reads import CurveReads
from app.metricsfile import DEFAULT_MAX_POINTS, MetricsFiles


@asynccontextmanager
async def _stop_reader(app: FastAPI) -> AsyncIterator[None]:
    """The reader process (if a big file started one) ends with the service: no process outlives it."""
    try:
        yield
    finally:
        reads = getattr(app.state, "metrics_reads", None)
        if reads is not None:
            reads.close()


router = APIRouter(prefix="/runs", tags=["runs"], lifespan=_stop_reader)


class Curve(BaseModel):
    step: list[float] = Field(description="the global step of each point (x)")
    epoch: list[float | None] = Field(description="the epoch of each point")
    value: list[float] = Field(description="the metric's value at each point (y)")
    points: int = Field(description="how many points the file holds for this metric (partial: sampled)")
    downsampled: bool = Field(description="true when fewer than `points` are sent (min and max per bucket)")


class RunMetrics(BaseModel):
    name: str
    rows: int = Field(
        description="rows of metrics.csv read (0: no file yet, or none at all; partial: sampled)"
    )
    skipped: int = Field(description="cells left out: not a finite number (a NaN loss)")
    max_points: int
    metrics: dict[str, Curve] = Field(description="one curve per metric column, e.g. train_loss, val_loss")
    partial: bool = Field(
        False,
        description="present, and true, while a big file's first full read runs: the curves come from "
        "evenly spaced pieces of the file (2 MiB in all), and the answer has no ETag; ask again (the "
        "dashboard polls) for the full curves",
    )
    estimated_rows: int | None = Field(
        None, description="in a partial answer only: the file's rows, estimated from the sampled pieces"
    )


def get_metrics_reads(request: Request) -> CurveReads:
    """One reader (cache, reader process) per app, made on first use beside the app's RunFiles."""
    state = request.app.state
    found = getattr(state, "metrics_reads", None)
    if found is None:
        found = state.metrics_reads = CurveReads(MetricsFiles(state.files.output_dir))
    return found


MetricsReadsDep = Annotated[CurveReads, Depends(get_metrics_reads)]


@router.get(
    "/{name}/metrics",
    response_model=RunMetrics,
    responses={
        304: {"description": "unchanged"},
        503: {"description": "the reader process of a big metrics.csv died; asking again reads it afresh"},
    },
)
async def run_metrics(
    name: str,
    request: Request,
    store: StoreDep,
    reads: MetricsReadsDep,
    max_points: Annotated[
        int, Query(ge=10, le=20_000, description="the most points per metric (longer curves are thinned)")
    ] = DEFAULT_MAX_POINTS,
) -> Any:
    """The run's ``metrics.csv`` as one curve per metric: ``{"metrics": {"train_loss": {"step": [...],
    "epoch": [...], "value": [...]}, "val_loss": {...}}}``. Empty ``metrics`` until the trainer writes
    the file (and for a queued or deleted run); 404 for an unknown run.

    A big file's first read (more than a few MB to read) runs apart; until it is done, the answer comes at
    once with ``"partial": true``, curves sampled from the file, and ``estimated_rows``: ask again for the
    full curves (they replace it; ``partial`` is absent from a full answer)."""
    record = get_run(store, name)
    stamp = reads.files.stamp(record.run_dir)
    etag = f'"{stamp[0]:x}-{stamp[1]:x}-{max_points}"' if stamp else f'"none-{max_points}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    curves = await reads.curves(record.run_dir, max_points)
    if curves.get("partial"):
        headers = {"Cache-Control": "no-store"}  # no ETag: the next poll must get the full curves
    body = RunMetrics(name=name, **curves)
    return Response(
        body.model_dump_json(exclude_defaults=True), media_type="application/json", headers=headers
    )
