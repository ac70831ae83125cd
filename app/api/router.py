"""Every route of the API, and the one function that mounts them on the app.

Every route needs a caller (``require_caller``: a token once auth is on) except ``/healthz`` (probes), the
OpenAPI docs, and the dashboard's static page and files (the page asks for a token, then calls the API).

Each module's router is mounted on the app itself, not through a router of routers: FastAPI walks every
level of included routers on every request, and one level less was a tenth of a poll's time.
"""

from __future__ import annotations

from fastapi import FastAPI

from app.api.auth import require_caller
from app.api.routes import (
    config,
    dashboard,
    gpus,
    health,
    notify,
    prom,
    reservations,
    run_files,
    run_metrics,
    runs,
    sweeps,
    usage,
    users,
)

NEEDS_CALLER = (
    runs.router,
    sweeps.router,
    config.router,
    usage.router,
    users.router,
    run_metrics.router,
    run_files.router,
    prom.router,
    gpus.router,
    notify.router,
    notify.server_router,
    reservations.router,
)


def mount_routes(app: FastAPI) -> None:
    for router in NEEDS_CALLER:
        app.include_router(router, dependencies=[require_caller])
    app.include_router(health.router)
    # The web dashboard (/, /web/*, /runs/<name>/view): static files; its data come through the API above.
    app.include_router(dashboard.router)
