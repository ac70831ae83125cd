"""Every route of the API under one router; ``app/main.py`` mounts it (and a page at ``/`` or ``/metrics``
can sit beside it)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import config, dashboard, health, prom, run_metrics, runs, usage

api_router = APIRouter()
api_router.include_router(runs.router)
api_router.include_router(health.router)
api_router.include_router(config.router)
api_router.include_router(usage.router)
# The web dashboard (/, /web/*, /runs/<name>/view), the curves of a run, and Prometheus' /metrics.
api_router.include_router(run_metrics.router)
api_router.include_router(prom.router)
api_router.include_router(dashboard.router)
