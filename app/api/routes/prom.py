"""GET /metrics: the Prometheus exposition (``app/metrics.py``), text format or OpenMetrics by ``Accept``.

The registry is made when the app starts (this router's lifespan), after the run manager reconciled the
store, so the dispatch histogram counts the runs this service starts. A scrape reads SQLite in the thread
pool: the event loop keeps serving pollers meanwhile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool

from app.metrics import ServiceMetrics, service_metrics


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    manager = app.state.manager
    guard = manager.guard
    app.state.prometheus = ServiceMetrics(
        manager.store,
        tuple(manager.gpus),
        lambda: guard.view().busy,
        manager.stalls.stalled,
        manager.budgets.report,
    )
    yield


router = APIRouter(tags=["metrics"], lifespan=lifespan)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Queue length per pool, running runs, GPUs busy/free, finished runs by status, submission and
    dispatch latency, queued/running runs per owner, stalled runs."""
    found = service_metrics(request.app)
    if found is None:  # not started (no lifespan ran): nothing true to say yet
        return Response("service starting\n", status_code=503, media_type="text/plain")
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    body = await run_in_threadpool(encoder, found.registry)
    return Response(body, media_type=content_type)
