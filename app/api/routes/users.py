"""/queue and /users: who runs what, what waits, recent usage (anyone); users and their limits (admins).

Tokens are made and rotated on the server only (``python -m app users ...``): they are shown once, to the
operator, and never travel through the API.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.auth import AdminDep, CallerDep
from app.api.deps import ManagerDep
from app.errors import NotFound
from app.fairshare import CPU, GPU, pool_of

router = APIRouter(tags=["users"])


class Limits(BaseModel):
    max_gpus: int | None = Field(
        None, ge=0, description="GPUs in use at once; 0 or null: no limit of their own"
    )
    max_queued: int | None = Field(None, ge=0, description="runs queued at once")
    max_run_s: float | None = Field(None, ge=0, description="seconds a run may run before it is cancelled")


@router.get("/queue")
async def queue(manager: ManagerDep, caller: CallerDep) -> dict[str, Any]:
    """Per user: what runs (and on which GPUs), what is queued (in the fair order), their recent usage and
    their limits."""
    return await run_in_threadpool(_queue, manager)


def _queue(manager) -> dict[str, Any]:  # noqa: ANN001 - RunManager
    running, queued = manager.store.running(), manager.store.queued()
    positions = manager.queue_positions()
    owners = sorted({r.owner or "" for r in running + queued} | manager.fair.owners())
    users = {}
    for owner in owners:
        users[owner] = {
            "running": [
                {"name": r.name, "gpus": r.gpus, "pool": pool_of(r)} for r in running if r.owner == owner
            ],
            "queued": [
                {"name": r.name, "pool": pool_of(r), "queue_position": positions.get(r.name)}
                for r in queued
                if r.owner == owner
            ],
            "usage": {pool: round(manager.fair.usage(owner, pool, running), 1) for pool in (GPU, CPU)},
            "limits": manager.limits(owner),
        }
    return {"half_life_s": manager.fair.half_life, "users": users}


@router.get("/users")
async def list_users(manager: ManagerDep, _: AdminDep) -> dict[str, Any]:
    return {
        "users": [
            {"name": u.name, "admin": u.is_admin, "active": u.active, "limits": manager.limits(u.name)}
            for u in manager.users.list()
        ]
    }


@router.put("/users/{name}/limits")
async def set_limits(name: str, limits: Limits, manager: ManagerDep, _: AdminDep) -> dict[str, Any]:
    """An admin sets a user's own limits (null keeps one as it is)."""
    if manager.users.get(name) is None:
        raise NotFound(f"no user named {name!r}; create one with: python -m app users add {name}")
    manager.users.set_limits(name, limits.max_gpus, limits.max_queued, limits.max_run_s)
    return {"name": name, "limits": manager.limits(name)}
