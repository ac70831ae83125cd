"""GET /healthz: is the service up, and can it start runs: is the launcher's engine reachable (the Docker
Engine, ...), and has the output directory's disk room (and is it there at all)?"""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ManagerDep, StoreDep
from app.api.gpus_public import guard_public
from app.api.public import Disk, Health
from app.models import RunStatus

router = APIRouter(tags=["health"])


# HEAD too: monitoring probes use it. A route of its own, out of the OpenAPI document: one route with
# both methods would give both operations the same id.
@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
@router.head("/healthz", include_in_schema=False)
def healthz(manager: ManagerDep, store: StoreDep) -> JSONResponse:
    """200 when runs can start; 503 (same body, status "degraded") when the launcher's engine is down, the
    output directory's disk is nearly full or gone (runs stay queued meanwhile), or the run store cannot be
    written (nothing can be submitted or recorded; the reason says why)."""
    try:
        launcher_ok, detail = manager.launcher.health()
    except Exception as exc:  # a health check must answer, whatever the engine does
        launcher_ok, detail = False, f"health check failed: {exc}"
    disk = manager.disk.check()
    if not disk.ok:
        detail = f"{disk.reason}; {detail}"
    store_problem = store.write_problem()
    if store_problem:
        detail = f"the run store cannot be written: {store_problem}; {detail}"
    ok = launcher_ok and disk.ok and not store_problem
    health = Health(
        status="ok" if ok else "degraded",
        launcher=manager.launcher.name,
        launcher_ok=launcher_ok and disk.ok,  # as it always was: whether the launcher can start runs
        detail=detail,
        store_ok=not store_problem,
        store_problem=store_problem,
        gpus=list(manager.gpus),
        queued=store.count([RunStatus.QUEUED]),
        running=store.count([RunStatus.RUNNING]),
        disk=Disk(**dataclasses.asdict(disk)),
        gpu_guard=guard_public(manager.guard.view()),  # its last look: never NVML per request
    )
    return JSONResponse(health.model_dump(mode="json"), status_code=200 if ok else 503)
