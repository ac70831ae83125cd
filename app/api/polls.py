"""The polls, answered before routing: ``GET /runs/{name}``, ``GET /runs`` (with at most ``limit``) and
``GET /queue``, the requests a lab makes most (every ``--wait``, every dashboard tab, every script).

Through FastAPI, a poll's own work (check the token, read the store, take the run's JSON) was a third of
its time; matching the route, solving its dependencies and the exception and exit-stack layers were the
rest (bench/hot_paths_bench.py, profiled). ``FastPolls`` answers these three requests itself, with the same
bytes and headers as their routes, and only when all is well: a good token, a run that exists, no other
query parameter, no body. Anything else (no or a wrong token, an unknown run, another parameter, a HEAD,
an error while answering) goes on to the route, which answers or refuses it as it always has, so every
error is still translated in one place (``app/errors.py``) and counted where it always was (the login
throttle). The routes stay the documented API; this is only a shorter way to their answer.

Nothing here is cached beyond what the views keep (``RunView``, ``QueueView``): the token is looked up and
the run read on every request, so a revoked token is refused and a new status shown on the very next one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.auth import AuthPolicy
from app.api.view import RunView

if TYPE_CHECKING:
    from starlette.datastructures import State

    from app.api.queue_view import QueueView
    from app.lifecycle import RunManager

JSON_HEADERS = b"application/json"
MAX_LIMIT = 1000  # GET /runs's own bound on limit


class FastPolls:
    """ASGI middleware: the polls' answers without the routing, when all is well; the app otherwise."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and self.state.fast_polls:
            route = _route(scope["path"], scope["query_string"])
            if route is not None:
                body = await self._answer(scope, *route)
                if body is not None:
                    await _send_json(send, body)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, what: str, arg: str | int) -> bytes | None:
        authorization = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key in (b"content-length", b"transfer-encoding") and value not in (b"0", b""):
                return None  # a GET with a body: the route (and the body guard) decide what it is
        auth: AuthPolicy = self.state.auth
        manager: RunManager = self.state.manager
        try:
            if auth.known_caller(authorization) is None:
                return None  # the route refuses it (401/429) and counts the failure
            if what == "run":
                record = manager.store.get(str(arg))
                if record is None or (record.rerun_of and record.started_at is not None) or record.after:
                    # a started rerun: the route compares its code with the original's; a run that waits
                    # for others: it shows the state of each (docs/run-chains.md)
                    return None
                view: RunView = self.state.view
                return view.one_json(record)
            if what == "page":
                # A page is a few milliseconds of CPU: yield first, as the route does, so that under many
                # connections each gets its turn.
                await asyncio.sleep(0)
                page: RunView = self.state.view
                return page.page_json(manager.store, [], int(arg))
            queue: QueueView = self.state.queue_view
            return queue.cached()  # a build reads the whole queue: the route does it off the loop
        except Exception:  # e.g. the store cannot be read: the route says so, as it always has
            return None


def _route(path: str, query: bytes) -> tuple[str, str | int] | None:
    """("run", name), ("page", limit) or ("queue", "") for the polls answered here; None for the rest."""
    if path == "/queue":
        return ("queue", "") if not query else None
    if path == "/runs":
        if not query:
            return "page", 100  # the route's default
        key, _, value = query.partition(b"=")
        if key == b"limit" and value.isdigit() and len(value) <= 4 and 1 <= int(value) <= MAX_LIMIT:
            return "page", int(value)
        return None
    if path.startswith("/runs/") and not query:
        name = path[len("/runs/") :]
        return ("run", name) if name and "/" not in name else None
    return None


async def _send_json(send: Send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", JSON_HEADERS)],
        }
    )
    await send({"type": "http.response.body", "body": body})
