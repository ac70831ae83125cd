"""The ceiling of this machine for a JSON poll: a bare FastAPI + uvicorn app that answers fixed bytes.

    python bench/bare_server.py PORT BODIES_DIR

``BODIES_DIR`` holds one file per route, named by ``route_file`` (the route's path with ``/`` as ``~``); each
is answered on GET as ``application/json``, with no work at all: no auth, no store, no serialization. The
bench compares labrun's polling with this, same client, same bytes, same sitting (bench/hot_paths_bench.py).
uvicorn runs as labrun does (httptools, one worker, no access log), so the difference is labrun's own work.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response


def route_file(path: str) -> str:
    """The file name a route's body is kept under (``/runs/x`` -> ``~runs~x``)."""
    return path.replace("/", "~")


def answer(body: bytes) -> Callable[[], Awaitable[Response]]:
    async def handler() -> Response:
        return Response(body, media_type="application/json")

    return handler


def build(bodies: Path) -> FastAPI:
    app = FastAPI()
    for file in sorted(bodies.iterdir()):
        app.add_api_route(file.name.replace("~", "/"), answer(file.read_bytes()), methods=["GET"])

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"ok":true}', media_type="application/json")

    return app


if __name__ == "__main__":
    port, bodies = int(sys.argv[1]), Path(sys.argv[2])
    uvicorn.run(
        build(bodies), host="127.0.0.1", port=port, access_log=False, log_level="warning", http="httptools"
    )
