"""/sweeps: queue a Hydra sweep as N runs, look at it, cancel it, rerun what failed. Thin: the sweep
lifecycle is ``app/sweeps.py``; ``SweepView`` (``app/api/view.py``) turns records into answers. Anyone
may read any sweep; only its owner or an admin may cancel or rerun it. Its runs are ordinary runs
(``/runs/<name>``: logs, cancel, ...)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from app.api.auth import Caller, CallerDep
from app.api.deps import BeforeQuery, CreationDep, OwnerQuery, ViewDep, get_manager
from app.api.public import RunCreate, SweepPublic, SweepsPublic
from app.api.routes.notify import NotifyDep
from app.api.view import RunView, SweepView
from app.errors import Forbidden
from app.models import SweepRecord
from app.notify.events import parse_events
from app.sweeps import Sweeps, key_overrides

router = APIRouter(prefix="/sweeps", tags=["sweeps"])


async def get_sweeps(request: Request) -> Sweeps:
    return Sweeps(await get_manager(request))


SweepsDep = Annotated[Sweeps, Depends(get_sweeps)]


@router.post("", status_code=201, response_model=SweepPublic)
async def submit_sweep(
    body: RunCreate, new: CreationDep, sweeps: SweepsDep, view: ViewDep, notify: NotifyDep
) -> SweepPublic:
    """Expand Hydra's sweep syntax (``a=1,2``, ``range()``, ``choice()``, ``glob()``) as Hydra's basic
    sweeper does, validate every run as ``POST /runs`` would, and queue them all as the caller's runs, or
    none: 422 naming the combination that is invalid, or a sweep larger than LABRUN_MAX_SWEEP_RUNS; 429
    past the caller's limit of queued runs."""
    events = parse_events(body.notify) if body.notify is not None else None
    sweep, replayed = await run_in_threadpool(
        sweeps.submit,
        body.overrides,
        body.config_name,
        new.idempotency_key,
        new.caller.name,
        body.priority,
        body.time_limit,
        body.after_entries(),
    )
    notify.choose(sweep.name, events)
    new.created("sweeps", sweep.name, replayed)
    return await run_in_threadpool(_public, sweeps, view, sweep)


@router.get("", response_model=SweepsPublic)
async def list_sweeps(
    sweeps: SweepsDep,
    view: ViewDep,
    caller: CallerDep,
    owner: OwnerQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: BeforeQuery = None,
) -> SweepsPublic:
    """Sweeps, newest first, with their runs counted by status."""
    owner = caller.name if owner == "me" else owner
    found = sweeps.list(limit + 1, before, owner)
    more = len(found) > limit
    found = found[:limit]
    counts = sweeps.counts([s.name for s in found])
    summaries = SweepView(view)
    return SweepsPublic(
        data=[summaries.summary(s, counts[s.name]) for s in found],
        next_before=found[-1].seq if more else None,
    )


@router.get("/{name}", response_model=SweepPublic)
async def read_sweep(name: str, sweeps: SweepsDep, view: ViewDep) -> SweepPublic:
    """Counts per status, every run (its swept lines, status, final val_loss) and the best run so far."""
    return await run_in_threadpool(_public, sweeps, view, sweeps.get(name))


@router.post("/{name}/cancel", response_model=SweepPublic)
async def cancel_sweep(name: str, caller: CallerDep, sweeps: SweepsDep, view: ViewDep) -> SweepPublic:
    """Cancel every queued and running run of the sweep (only its owner or an admin may)."""
    sweep = sweeps.get(name)
    _check_may_change(caller, sweep, "cancel")
    await run_in_threadpool(sweeps.cancel, name, caller.name)
    return await run_in_threadpool(_public, sweeps, view, sweep)


@router.post("/{name}/rerun", status_code=201, response_model=SweepPublic)
async def rerun_sweep(name: str, new: CreationDep, sweeps: SweepsDep, view: ViewDep) -> SweepPublic:
    """Queue its failed and cancelled runs again (same overrides and seed, same places in the sweep); 409
    when there are none."""
    _check_may_change(new.caller, sweeps.get(name), "rerun")
    sweep, replayed = await run_in_threadpool(sweeps.rerun, name, new.idempotency_key, new.caller.name)
    new.created("sweeps", sweep.name, replayed)
    return await run_in_threadpool(_public, sweeps, view, sweep)


def _public(sweeps: Sweeps, view: RunView, sweep: SweepRecord) -> SweepPublic:
    return SweepView(view).one(sweep, sweeps.runs(sweep.name), lambda r: key_overrides(r, sweep.swept))


def _check_may_change(caller: Caller, sweep: SweepRecord, action: str) -> None:
    if not (caller.is_admin or sweep.owner == caller.name):
        raise Forbidden(
            f"sweep {sweep.name!r} is {sweep.owner}'s; only they or an admin may {action} it "
            f"(you are {caller.name})"
        )
