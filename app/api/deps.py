"""Dependencies as Annotated aliases, so route signatures read like types.

They are ``async``: FastAPI runs a plain ``def`` dependency in the thread pool, a hop per dependency per
request that on the polling path cost more than the request's own work.

Reads go straight to the store and the run files (``StoreDep``, ``FilesDep``); only what changes a run goes
through the run lifecycle (``ManagerDep``). ``app.state`` is untyped: each value on it is read here, once,
under the type ``create_app`` gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Response

from app.api.auth import Caller, CallerDep
from app.api.view import RunView
from app.errors import RunNotFound
from app.lifecycle import RunManager
from app.models import RunRecord
from app.runfiles import RunFiles
from app.store import RunStore


async def get_manager(request: Request) -> RunManager:
    manager: RunManager = request.app.state.manager
    return manager


async def get_store(request: Request) -> RunStore:
    return (await get_manager(request)).store


async def get_files(request: Request) -> RunFiles:
    files: RunFiles = request.app.state.files
    return files


async def get_view(request: Request) -> RunView:
    view: RunView = request.app.state.view  # one per app: it keeps the runs' JSON between requests
    return view


ManagerDep = Annotated[RunManager, Depends(get_manager)]
ViewDep = Annotated[RunView, Depends(get_view)]
StoreDep = Annotated[RunStore, Depends(get_store)]
FilesDep = Annotated[RunFiles, Depends(get_files)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="a repeated POST with the same key returns the same run",
    ),
]


# Query parameters of the listing pages (runs, sweeps): bounded by the schema, so no value reaches SQLite
# out of its range (a page cursor is at most SQLite's largest integer).
OwnerQuery = Annotated[str | None, Query(max_length=64, description="a user's name, or me")]
BeforeQuery = Annotated[
    int | None, Query(ge=1, le=2**63 - 1, description="the next page: next_before of the last answer")
]


@dataclass(frozen=True)
class Creation:
    """What every request that makes something (a run, a rerun, a sweep) shares: who asks, its
    Idempotency-Key, and the answer's headers (``Location``; ``Idempotent-Replayed`` for a replay)."""

    caller: Caller
    idempotency_key: str | None
    response: Response

    def created(self, collection: str, name: str, replayed: bool) -> None:
        self.response.headers["Location"] = f"/{collection}/{name}"
        if replayed:
            self.response.headers["Idempotent-Replayed"] = "true"


async def get_creation(
    caller: CallerDep, response: Response, idempotency_key: IdempotencyKey = None
) -> Creation:
    return Creation(caller, idempotency_key, response)


CreationDep = Annotated[Creation, Depends(get_creation)]


def get_run(store: RunStore, name: str) -> RunRecord:
    """The run's record, or a 404 naming it."""
    record = store.get(name)
    if record is None:
        raise RunNotFound(name)
    return record
