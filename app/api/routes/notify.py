"""/me/notify: the caller's own notification destinations and default events; /notify/server: the
server-wide destinations of the server's own events, for admins (docs/notifications.md).

Every route acts on the caller's own destinations only: another user's id answers 404. Checking a URL
resolves its host (and loads Apprise on first use), and a test sends a message: both run in the thread
pool, never on the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.auth import AdminDep, CallerDep
from app.api.notify_public import (
    DestinationAdded,
    DestinationCreate,
    DestinationEvents,
    DestinationPublic,
    DestinationsPublic,
    NotifyEvents,
    TestResult,
)
from app.notify.events import DEFAULT_EVENTS, SERVER, parse_events
from app.notify.service import Notifications

router = APIRouter(prefix="/me/notify", tags=["notifications"])
server_router = APIRouter(prefix="/notify/server", tags=["notifications"])


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
    added = await run_in_threadpool(notify.destinations.add, caller.name, body.url, body.events)
    public = DestinationPublic.of(added.destination)
    return DestinationAdded(**public.model_dump(), signing_secret=added.signing_secret)


@router.delete("/destinations/{id}", status_code=204)
async def remove_destination(id: int, caller: CallerDep, notify: NotifyDep) -> Response:
    notify.destinations.remove(caller.name, id)
    return Response(status_code=204)


@router.put("/destinations/{id}/events", response_model=DestinationPublic)
async def filter_destination(
    id: int, body: DestinationEvents, caller: CallerDep, notify: NotifyDep
) -> DestinationPublic:
    """Which of the events your choices send reach this destination (null: all; 422 naming an unknown)."""
    return DestinationPublic.of(notify.destinations.set_filter(caller.name, id, body.events))


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


# --- the server-wide destinations (admins): the server's own events go there --------------------------------


@server_router.get("/destinations", response_model=DestinationsPublic)
async def list_server_destinations(_: AdminDep, notify: NotifyDep) -> DestinationsPublic:
    """Where the server's events go: a GPU busy outside labrun, the disk low, the engine down."""
    found = [DestinationPublic.of(d) for d in notify.destinations.list(SERVER)]
    return DestinationsPublic(data=found, count=len(found))


@server_router.post("/destinations", status_code=201, response_model=DestinationAdded)
async def add_server_destination(body: DestinationCreate, _: AdminDep, notify: NotifyDep) -> DestinationAdded:
    """As ``POST /me/notify/destinations``, for the server's events (403 for a caller who is not an admin)."""
    added = await run_in_threadpool(notify.destinations.add, SERVER, body.url, body.events)
    public = DestinationPublic.of(added.destination)
    return DestinationAdded(**public.model_dump(), signing_secret=added.signing_secret)


@server_router.delete("/destinations/{id}", status_code=204)
async def remove_server_destination(id: int, _: AdminDep, notify: NotifyDep) -> Response:
    notify.destinations.remove(SERVER, id)
    return Response(status_code=204)


@server_router.post("/destinations/{id}/test", response_model=TestResult)
async def try_server_destination(id: int, _: AdminDep, notify: NotifyDep) -> TestResult:
    error = await run_in_threadpool(notify.destinations.test, SERVER, id)
    return TestResult(ok=error is None, error=error)


@server_router.put("/destinations/{id}/events", response_model=DestinationPublic)
async def filter_server_destination(
    id: int, body: DestinationEvents, _: AdminDep, notify: NotifyDep
) -> DestinationPublic:
    """Which of the server's events reach this destination (null: all)."""
    return DestinationPublic.of(notify.destinations.set_filter(SERVER, id, body.events))
