"""/reservations: GPUs booked for a window (docs/reservations.md). Anyone may list them and book within
their grant; the owner (or an admin) ends one early; admins set each user's grant. Thin: the lifecycle's
room (``app/lifecycle/reservations.py``) checks, books and keeps them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from app.api.auth import AdminDep, CallerDep
from app.api.deps import ManagerDep
from app.api.reservations_public import (
    GrantPublic,
    ReservationCreate,
    ReservationPublic,
    ReservationsPublic,
    UserGrantPublic,
    grant_public,
    reservation_public,
)
from app.errors import NotFound
from app.lifecycle import RunManager
from app.reservations import Grant, Reservation

router = APIRouter(tags=["reservations"])
Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="the reservation's number")]


@router.post("/reservations", response_model=ReservationPublic, status_code=201)
async def book(body: ReservationCreate, manager: ManagerDep, caller: CallerDep) -> ReservationPublic:
    """Book GPUs for a window, for the caller or a list of users. Refused (422) when the window is in the
    past or over the caller's grant, or labrun does not place runs (a cluster: its own reservations);
    (409) when overlapping reservations leave too few GPUs."""
    made = await run_in_threadpool(
        manager.reservations.book,
        caller.name,
        caller.is_admin,
        body.start.timestamp(),
        body.end.timestamp(),
        body.gpus,
        body.users,
        body.note,
    )
    return _public(manager, [made])[0]


@router.get("/reservations", response_model=ReservationsPublic)
async def listing(
    manager: ManagerDep,
    caller: CallerDep,
    all: Annotated[bool, Query(description="the reservations that are over too")] = False,
) -> ReservationsPublic:
    """The reservations not over (the latest window first), with the runs on their GPUs now."""
    found = await run_in_threadpool(manager.reservations.listing, all)
    grant = manager.reservations.grant(caller.name, caller.is_admin)
    return ReservationsPublic(data=_public(manager, found), count=len(found), grant=grant_public(grant))


@router.get("/reservations/{id}", response_model=ReservationPublic)
async def one(id: Id, manager: ManagerDep) -> ReservationPublic:
    return _public(manager, [manager.reservations.get(id)])[0]


@router.delete("/reservations/{id}", response_model=ReservationPublic)
async def end(id: Id, manager: ManagerDep, caller: CallerDep) -> ReservationPublic:
    """End a reservation early (its owner or an admin): its GPUs are anyone's at once."""
    ended = await run_in_threadpool(manager.reservations.end, id, caller.name, caller.is_admin)
    return _public(manager, [ended])[0]


@router.post("/reservations/{id}/end", response_model=ReservationPublic)
async def end_now(id: Id, manager: ManagerDep, caller: CallerDep) -> ReservationPublic:
    """The same as ``DELETE /reservations/{id}``."""
    return await end(id, manager, caller)


@router.put("/users/{name}/reservation-grant", response_model=UserGrantPublic)
async def set_grant(name: str, grant: GrantPublic, manager: ManagerDep, _: AdminDep) -> UserGrantPublic:
    """An admin sets a user's own grant of reservations (a null part: the server's)."""
    if manager.users.get(name) is None:
        raise NotFound(f"no user named {name!r}; create one with: python -m app users add {name}")
    own = Grant(grant.gpu_hours, grant.max_window_s, grant.ahead_s)
    manager.store.reservations.set_grant(name, own)
    return UserGrantPublic(name=name, grant=grant_public(manager.reservations.grant(name, False)))


@router.get("/users/{name}/reservation-grant", response_model=UserGrantPublic)
async def get_grant(name: str, manager: ManagerDep, _: AdminDep) -> UserGrantPublic:
    user = manager.users.get(name)
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return UserGrantPublic(name=name, grant=grant_public(manager.reservations.grant(name, user.is_admin)))


def _public(manager: RunManager, found: list[Reservation]) -> list[ReservationPublic]:
    on_gpus = {r.name: (r.owner, list(r.gpus)) for r in manager.store.running() if r.gpus}
    return [reservation_public(r, manager.reservations.phase(r), on_gpus) for r in found]
