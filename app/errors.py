"""What can go wrong in a request, and the one place where it becomes an HTTP answer.

    LabrunError                 a request the service refuses; always a {"detail": "..."} JSON body
    ├── RunNotFound             404  no run has that name
    ├── InvalidRun              422  the overrides do not make a valid, safe run (names the override + fix)
    └── RunConflict             409  the request contradicts the run's state (cancel a finished run,
                                     an Idempotency-Key reused for a different request)
    launchers.EngineUnavailable 503  the engine (Docker, ...) cannot be reached right now

Anything else raised by a route is a bug: the client gets a 500 with a generic message and the log gets
the traceback. Clients never see tracebacks or server paths.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.launchers.base import EngineUnavailable

log = logging.getLogger("labrun")


class LabrunError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class RunNotFound(LabrunError):
    status_code = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"no run named {name!r}")


class InvalidRun(LabrunError):
    status_code = 422


class RunConflict(LabrunError):
    status_code = 409


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LabrunError)
    async def _labrun(_: Request, exc: LabrunError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(EngineUnavailable)
    async def _engine(_: Request, exc: EngineUnavailable) -> JSONResponse:
        return JSONResponse({"detail": f"the run engine is unavailable: {exc}"}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _describe(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)


def _describe(exc: RequestValidationError) -> str:
    """FastAPI's list of errors as one sentence a person can act on."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)
