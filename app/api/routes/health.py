"""GET /healthz: is the service up, and can its launcher start runs (e.g. is the Docker Engine reachable)?"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ManagerDep, StoreDep
from app.api.public import Health
from app.models import RunStatus

router = APIRouter(tags=["health"])


# HEAD too: monitoring probes use it.
@router.api_route(
    "/healthz", methods=["GET", "HEAD"], response_model=Health, responses={503: {"model": Health}}
)
def healthz(manager: ManagerDep, store: StoreDep) -> JSONResponse:
    """200 when runs can start; 503 (same body) when the launcher's engine is down (runs stay queued)."""
    try:
        ok, detail = manager.launcher.health()
    except Exception as exc:  # a health check must answer, whatever the engine does
        ok, detail = False, f"health check failed: {exc}"
    health = Health(
        status="ok" if ok else "degraded",
        launcher=manager.launcher.name,
        launcher_ok=ok,
        detail=detail,
        gpus=list(manager.gpus),
        queued=store.count([RunStatus.QUEUED]),
        running=store.count([RunStatus.RUNNING]),
    )
    return JSONResponse(health.model_dump(), status_code=200 if ok else 503)
