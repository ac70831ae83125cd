"""The one place where the domain's exceptions (``app/errors.py``) become HTTP answers.

    NotFound           404 (RunNotFound: no run of that name; RunFileNotFound: no such file in it)
    RunGone            410 (a deleted run's files)
    RangeNotSatisfiable 416 (with Content-Range: bytes */SIZE)
    InvalidPath        422 (a run's file asked with .., an absolute path or a NUL byte)
    InvalidRun         422  (also FastAPI's own body validation, as one readable sentence)
    Unauthenticated    401 (with WWW-Authenticate: Bearer)
    Forbidden          403
    RunConflict        409
    InvalidReservation 422, ReservationConflict 409
    TooManyRuns        429
    TooManyLoginFailures 429 (with Retry-After)
    InsufficientStorage 507 (the disk is full: what to delete or free)
    StoreUnavailable   503
    CurvesUnavailable  503 (a big metrics.csv's reader process died; the next request reads it afresh)
    EngineUnavailable  503
    anything else      500 with a generic message; the traceback goes to the service log only

Every answer is JSON ``{"detail": "..."}``. Clients never see tracebacks or server paths.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import (
    CurvesUnavailable,
    EngineUnavailable,
    Forbidden,
    InsufficientStorage,
    InvalidPath,
    InvalidReservation,
    InvalidRun,
    LabrunError,
    NotFound,
    RangeNotSatisfiable,
    ReservationConflict,
    RunConflict,
    RunGone,
    StoreUnavailable,
    TooManyLoginFailures,
    TooManyRuns,
    Unauthenticated,
)

log = logging.getLogger("labrun")

STATUS_CODES: dict[type[LabrunError], int] = {
    NotFound: 404,
    InvalidRun: 422,
    InvalidPath: 422,
    RunGone: 410,
    RangeNotSatisfiable: 416,
    RunConflict: 409,
    InvalidReservation: 422,
    ReservationConflict: 409,
    Unauthenticated: 401,
    Forbidden: 403,
    TooManyRuns: 429,
    TooManyLoginFailures: 429,
    InsufficientStorage: 507,
    StoreUnavailable: 503,
    CurvesUnavailable: 503,
}


def status_code(exc: LabrunError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return 400


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LabrunError)
    async def _labrun(_: Request, exc: LabrunError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
        if isinstance(exc, TooManyLoginFailures):
            headers = {"Retry-After": str(exc.retry_after)}
        if isinstance(exc, RangeNotSatisfiable):
            headers = {"Content-Range": f"bytes */{exc.size}"}
        return JSONResponse({"detail": exc.detail}, status_code=status_code(exc), headers=headers)

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
    async def _bug(request: Request, _exc: Exception) -> JSONResponse:  # logged with its traceback
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; see the service log"}, status_code=500)


def _describe(exc: RequestValidationError) -> str:
    """FastAPI's list of errors as one sentence a person can act on."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)
