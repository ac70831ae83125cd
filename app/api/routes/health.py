"""GET /healthz: is the service up, and can it start runs: is the launcher's engine reachable (the Docker
Engine, ...), and has the output directory's disk room (and is it there at all)?"""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ManagerDep, StoreDep
from app.api.public import Disk, Health
from app.models import RunStatus

router = APIRouter(tags=["health"])


# HEAD too: monitoring probes use it.
@router.api_route(
    "/healthz", methods=["GET", "HEAD"], response_model=Health, responses={503: {"model": Health}}
)
def healthz(manager: ManagerDep, store: StoreDep) -> JSONResponse:
    """200 when runs can start; 503 (same body, status "degraded") when the launcher's engine is down or the
    output directory's disk is nearly full or gone (runs stay queued meanwhile)."""
    try:
        ok, detail = manager.launcher.health()
    except Exception as exc:  # a health check must answer, whatever the engine does
        ok, detail = False, f"health check failed: {exc}"
    disk = manager.disk.check()
    if not disk.ok:
        detail = f"{disk.reason}; {detail}"
    ok = ok and disk.ok
    health = Health(
        status="ok" if ok else "degraded",
        launcher=manager.launcher.name,
        launcher_ok=ok,
        detail=detail,
        gpus=list(manager.gpus),
        queued=store.count([RunStatus.QUEUED]),
        running=store.count([RunStatus.RUNNING]),
        disk=Disk(**dataclasses.asdict(disk)),
    )
    return JSONResponse(health.model_dump(), status_code=200 if ok else 503)
