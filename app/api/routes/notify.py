"""/me/notify: the caller's own notification destinations and default events (docs/notifications.md).

Every route acts on the caller's own destinations only: another user's id answers 404. Checking a URL
resolves its host (and loads Apprise on first use), and a test sends a message: both run in the thread
pool, never on the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.auth import CallerDep
from app.api.notify_public import (
    DestinationAdded,
    DestinationCreate,
    DestinationPublic,
    DestinationsPublic,
    NotifyEvents,
    TestResult,
)
from app.notify.events import DEFAULT_EVENTS, parse_events
from app.notify.service import Notifications

router = APIRouter(prefix="/me/notify", tags=["notifications"])


async def get_notify(request: Request) -> Notifications:
    found: Notifications = request.app.state.notify
    return found


NotifyDep = Annotated[Notifications, Depends(get_notify)]


@router.get("/destinations", response_model=DestinationsPublic)
async def list_destinations(caller: CallerDep, notify: NotifyDep) -> DestinationsPublic:
    found = [DestinationPublic.of(d) for d in notify.destinations.list(caller.name)]
    return DestinationsPublic(data=found, count=len(found))


@router.post("/destinations", status_code=201, response_model=DestinationAdded)
async def add_destination(body: DestinationCreate, caller: CallerDep, notify: NotifyDep) -> DestinationAdded:
    """422 with the reason when Apprise does not understand the URL, its scheme is not allowed, or its host
    is one the server may not reach. A webhook's signing secret is in this answer only."""
    added = await run_in_threadpool(notify.destinations.add, caller.name, body.url)
    public = DestinationPublic.of(added.destination)
    return DestinationAdded(**public.model_dump(), signing_secret=added.signing_secret)


@router.delete("/destinations/{id}", status_code=204)
async def remove_destination(id: int, caller: CallerDep, notify: NotifyDep) -> Response:
    notify.destinations.remove(caller.name, id)
    return Response(status_code=204)


@router.post("/destinations/{id}/test", response_model=TestResult)
async def test_destination(id: int, caller: CallerDep, notify: NotifyDep) -> TestResult:
    """Send a test message now; a paused destination that gets it resumes."""
    error = await run_in_threadpool(notify.destinations.test, caller.name, id)
    return TestResult(ok=error is None, error=error)


@router.get("/events", response_model=NotifyEvents)
async def default_events(caller: CallerDep, notify: NotifyDep) -> NotifyEvents:
    found = notify.outbox.defaults(caller.name)
    return NotifyEvents(events=found if found is not None else [e.value for e in DEFAULT_EVENTS])


@router.put("/events", response_model=NotifyEvents)
async def set_default_events(body: NotifyEvents, caller: CallerDep, notify: NotifyDep) -> NotifyEvents:
    """The events the caller's runs send when their submission chose none (422 naming an unknown one)."""
    events = parse_events(body.events)
    notify.outbox.set_defaults(caller.name, events)
    return NotifyEvents(events=events)
