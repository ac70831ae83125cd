"""The wire format of reservations (``/reservations``): what a booking asks, and what a reservation shows."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field

from app.reservations import Grant, Phase, Reservation, iso


class ReservationCreate(BaseModel):
    gpus: int | list[int] = Field(
        description="how many GPUs (they are chosen and shown at once), or which ones, e.g. [2, 3]"
    )
    start: AwareDatetime = Field(
        description="the window's start, RFC 3339 with an offset (2026-12-04T14:00:00+01:00)"
    )
    end: AwareDatetime = Field(description="the window's end (not included), RFC 3339 with an offset")
    users: list[str] | None = Field(
        None, max_length=64, description="whose runs it is for (default: the caller alone)"
    )
    note: str | None = Field(None, max_length=500, description="what it is for (shown in the lists)")


class OnGpus(BaseModel):
    run: str
    owner: str | None
    gpus: list[int]


class ReservationPublic(BaseModel):
    id: int
    owner: str
    users: list[str]
    gpus: list[int] = Field(description="the GPUs it holds, assigned when it was booked")
    start: str = Field(description="RFC 3339, the server's offset")
    end: str
    start_ts: float
    end_ts: float
    phase: Phase = Field(
        description="upcoming; clearing (others' runs on its GPUs are being preempted); open; over"
    )
    created_at: float
    ended_at: float | None = Field(None, description="when its owner (or an admin) ended it early")
    ended_by: str | None = None
    note: str | None = None
    gpu_hours: float
    runs: list[OnGpus] = Field(default_factory=list, description="the runs on its GPUs now")


class GrantPublic(BaseModel):
    gpu_hours: float | None = Field(None, ge=0, description="GPU-hours one booking may hold (0: none)")
    max_window_s: float | None = Field(None, gt=0, description="seconds the longest window lasts")
    ahead_s: float | None = Field(None, gt=0, description="seconds ahead a window may start at the latest")


class ReservationsPublic(BaseModel):
    data: list[ReservationPublic]
    count: int
    grant: GrantPublic | None = Field(description="the caller's grant (null: no bound, an admin)")


class UserGrantPublic(BaseModel):
    name: str
    grant: GrantPublic | None


def reservation_public(
    r: Reservation, phase: Phase, on_gpus: dict[str, tuple[str | None, list[int]]]
) -> ReservationPublic:
    runs = [
        OnGpus(run=name, owner=owner, gpus=gpus)
        for name, (owner, gpus) in on_gpus.items()
        if phase != Phase.OVER and set(gpus) & set(r.gpus)
    ]
    return ReservationPublic(
        id=r.id,
        owner=r.owner,
        users=list(r.users),
        gpus=list(r.gpus),
        start=iso(r.start_at),
        end=iso(r.end_at),
        start_ts=r.start_at,
        end_ts=r.end_at,
        phase=phase,
        created_at=r.created_at,
        ended_at=r.ended_at,
        ended_by=r.ended_by,
        note=r.note,
        gpu_hours=round(r.gpu_hours(), 3),
        runs=runs,
    )


def grant_public(grant: Grant | None) -> GrantPublic | None:
    if grant is None:
        return None
    return GrantPublic(gpu_hours=grant.gpu_hours, max_window_s=grant.max_window_s, ahead_s=grant.ahead_s)
