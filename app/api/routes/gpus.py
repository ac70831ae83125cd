"""/gpus: the service's GPUs and what runs on them outside labrun (anyone); the processes the guard lets be
and the Unix users that are labrun users (admins change them). Thin: the guard's cached view
(``app/gpus/``), the store's tables through ``app/gpus/admin.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from starlette.concurrency import run_in_threadpool

from app.api.auth import AdminDep
from app.api.deps import ManagerDep
from app.api.gpus_public import (
    GpuIgnoreCreate,
    GpuIgnorePublic,
    GpuIgnoresPublic,
    GpusPublic,
    UnixUserMap,
    UnixUsersPublic,
    gpus_public,
    ignore_public,
    ignores_public,
)
from app.gpus import admin
from app.lifecycle import RunManager

router = APIRouter(tags=["gpus"])
UnixUser = Annotated[str, Path(pattern=admin.UNIX_USER.pattern, description="a Unix user's name")]


@router.get("/gpus", response_model=GpusPublic)
async def gpus(manager: ManagerDep) -> GpusPublic:
    """Each GPU: its UUID and model, the labrun run on it, and the processes outside labrun on it (from the
    guard's last look, at most one interval old)."""
    return await run_in_threadpool(_gpus, manager)


def _gpus(manager: RunManager) -> GpusPublic:
    on_gpu = {g: r.name for r in manager.store.running() for g in r.gpus}
    return gpus_public(manager.guard.view(), manager.gpus, on_gpu)


@router.get("/gpus/ignores", response_model=GpuIgnoresPublic)
async def list_ignores(manager: ManagerDep) -> GpuIgnoresPublic:
    """The processes the guard lets be: they never keep a GPU from being handed out."""
    return ignores_public(manager.store.gpus.ignores())


@router.post("/gpus/ignores", response_model=GpuIgnorePublic, status_code=201)
async def add_ignore(body: GpuIgnoreCreate, manager: ManagerDep, caller: AdminDep) -> GpuIgnorePublic:
    """An admin lets a process be: one pid (that process only), or every command matching a pattern.
    It takes effect at the guard's next look (within one interval)."""
    if body.pid is not None:
        rule = admin.ignore_pid(manager.store, body.pid, body.note, caller.name)
    else:
        rule = admin.ignore_pattern(manager.store, body.pattern or "", body.note, caller.name)
    return ignore_public(rule)


@router.delete("/gpus/ignores/{ignore_id}", status_code=204)
async def remove_ignore(ignore_id: int, manager: ManagerDep, _: AdminDep) -> Response:
    """Undo an ignore rule: the processes it let be block their GPU again."""
    admin.unignore(manager.store, ignore_id)
    return Response(status_code=204)


@router.get("/gpus/unix-users", response_model=UnixUsersPublic)
async def unix_users(manager: ManagerDep, _: AdminDep) -> UnixUsersPublic:
    """Unix users mapped to labrun users: the GPU time their own processes hold outside the queue counts
    toward that labrun user's fair share."""
    return UnixUsersPublic(unix_users=manager.store.gpus.unix_users())


@router.put("/gpus/unix-users/{unix_user}", response_model=UnixUsersPublic)
async def map_unix_user(
    unix_user: UnixUser, body: UnixUserMap, manager: ManagerDep, _: AdminDep
) -> UnixUsersPublic:
    admin.map_unix_user(manager.store, unix_user, body.user)
    return UnixUsersPublic(unix_users=manager.store.gpus.unix_users())


@router.delete("/gpus/unix-users/{unix_user}", status_code=204)
async def unmap_unix_user(unix_user: UnixUser, manager: ManagerDep, _: AdminDep) -> Response:
    admin.unmap_unix_user(manager.store, unix_user)
    return Response(status_code=204)
