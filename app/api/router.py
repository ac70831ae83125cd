"""Every route of the API under one router; ``app/main.py`` mounts it.

Every route needs a caller (``require_caller``: a token once auth is on) except ``/healthz`` (probes), the
OpenAPI docs, and the dashboard's static page and files (the page asks for a token, then calls the API).
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.auth import require_caller
from app.api.routes import config, dashboard, health, prom, run_metrics, runs, sweeps, usage, users

api_router = APIRouter()
for needs_caller in (
    runs.router,
    sweeps.router,
    config.router,
    usage.router,
    users.router,
    run_metrics.router,
    prom.router,
):
    api_router.include_router(needs_caller, dependencies=[require_caller])
api_router.include_router(health.router)
# The web dashboard (/, /web/*, /runs/<name>/view): static files; its data come through the API above.
api_router.include_router(dashboard.router)
