"""GET /usage: what the runs' files take on the output directory's disk, and how much room is left."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ManagerDep, StoreDep
from app.api.public import Usage

router = APIRouter(tags=["usage"])


@router.get("/usage", response_model=Usage)
async def usage(store: StoreDep, manager: ManagerDep) -> Usage:
    disk = manager.disk.check()
    largest = [{"name": r.name, "disk_bytes": r.disk_bytes} for r in store.largest()]
    return Usage(**store.usage(), free_bytes=disk.free_bytes, total_bytes=disk.total_bytes, largest=largest)
