"""/queue and /users: who runs what, what waits, recent usage (anyone); users and their limits (admins).

Tokens are made and rotated on the server only (``python -m app users ...``): they are shown once, to the
operator, and never travel through the API.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.auth import AdminDep, AuthPolicy, CallerDep
from app.api.deps import ManagerDep
from app.api.public import (
    LimitsPublic,
    MyUsage,
    QueuePublic,
    UserLimitsPublic,
    UserPublic,
    UsersPublic,
    budget_public,
)
from app.api.queue_view import QueueView
from app.errors import NotFound
from app.lifecycle import RunManager

router = APIRouter(tags=["users"])


class Limits(BaseModel):
    max_gpus: int | None = Field(
        None, ge=0, description="GPUs in use at once; 0 or null: no limit of their own"
    )
    max_queued: int | None = Field(None, ge=0, description="runs queued at once")
    max_run_s: float | None = Field(
        None, ge=0, description="the longest time limit they may give a run (seconds of running time left)"
    )
    stall_after_s: float | None = Field(
        None, ge=0, description="seconds without progress or output before a run is stalled (0: never)"
    )
    high_gpus: int | None = Field(
        None, ge=0, description="GPUs their high-priority runs may hold at once (0: no high-priority runs)"
    )
    gpu_hours: float | None = Field(
        None, ge=0, description="GPU-hours per budget window before their runs start as low (0: no budget)"
    )
    cpu_hours: float | None = Field(
        None, ge=0, description="CPU run-hours per budget window before their CPU runs start as low (0: none)"
    )


class MePublic(BaseModel):
    name: str = Field(description="the user the token belongs to (the local user when auth is off)")
    admin: bool
    auth_required: bool = Field(description="whether this server asks every request for a token")


@router.get("/me", response_model=MePublic)
async def who_am_i(caller: CallerDep, request: Request) -> MePublic:
    """Who the request's token says the caller is (``labrun login`` and ``labrun whoami`` ask this)."""
    auth: AuthPolicy = request.app.state.auth
    return MePublic(name=caller.name, admin=caller.is_admin, auth_required=auth.required())


@router.get("/me/usage", response_model=MyUsage)
async def my_usage(caller: CallerDep, manager: ManagerDep) -> MyUsage:
    """The caller's GPU-hour and CPU-hour budgets: used within the window (running runs up to now), and the
    budget; over it, their runs start as low (docs/budgets-and-estimates.md)."""
    balances = await run_in_threadpool(manager.budgets.balances, caller.name)
    return MyUsage(name=caller.name, budgets=[budget_public(b) for b in balances])


@router.get("/queue", response_model=QueuePublic)
async def queue(request: Request) -> Response:
    """Per user: what runs (and on which GPUs), what is queued (in the fair order), their recent usage and
    their limits."""
    view: QueueView = request.app.state.queue_view
    body = view.cached() or await run_in_threadpool(view.json)  # a build reads the whole queue: off the loop
    return Response(body, media_type="application/json")


@router.get("/users", response_model=UsersPublic)
async def list_users(manager: ManagerDep, _: AdminDep) -> UsersPublic:
    """Every user (revoked ones too: a user is never deleted), with the limits in force for them."""
    return UsersPublic(
        users=[
            UserPublic(name=u.name, admin=u.is_admin, active=u.active, limits=_limits(manager, u.name))
            for u in manager.users.list()
        ]
    )


@router.put("/users/{name}/limits", response_model=UserLimitsPublic)
async def set_limits(name: str, limits: Limits, manager: ManagerDep, _: AdminDep) -> UserLimitsPublic:
    """An admin sets a user's own limits (null keeps one as it is)."""
    if manager.users.get(name) is None:
        raise NotFound(f"no user named {name!r}; create one with: python -m app users add {name}")
    manager.users.set_limits(name, limits.max_gpus, limits.max_queued, limits.max_run_s)
    if limits.stall_after_s is not None:
        manager.users.set_stall_after(name, limits.stall_after_s)
    if limits.high_gpus is not None:
        manager.users.set_high_gpus(name, limits.high_gpus)
    if limits.gpu_hours is not None or limits.cpu_hours is not None:
        manager.users.set_budgets(name, limits.gpu_hours, limits.cpu_hours)
    return UserLimitsPublic(name=name, limits=_limits(manager, name))


def _limits(manager: RunManager, owner: str) -> LimitsPublic:
    return LimitsPublic.model_validate(manager.limits(owner))
