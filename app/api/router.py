"""Every route of the API under one router; ``app/main.py`` mounts it (and a page at ``/`` or ``/metrics``
can sit beside it)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import health, runs

api_router = APIRouter()
api_router.include_router(runs.router)
api_router.include_router(health.router)
