"""Every route of the API under one router; ``app/main.py`` mounts it (and a page at ``/`` or ``/metrics``
can sit beside it)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import dashboard, health, prom, run_metrics, runs
from app.metrics import time_submissions

api_router = APIRouter()
time_submissions(runs.router)  # the submission latency histogram (app/metrics.py), on POST /runs alone
api_router.include_router(runs.router)
api_router.include_router(health.router)
# The web dashboard (/, /web/*, /runs/<name>/view), the curves of a run, and Prometheus' /metrics.
api_router.include_router(run_metrics.router)
api_router.include_router(prom.router)
api_router.include_router(dashboard.router)
