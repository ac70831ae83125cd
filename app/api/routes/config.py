"""GET /config/schema: every key a run's overrides may set, generated from the experiment's schema
(``trainer/schema.py``) by ``trainer/schema_docs.py``: its type, default, allowed values and description.
The documentation's table of keys (docs/reference/experiment-keys.md) is made from the same rows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.api.deps import ManagerDep
from trainer import schema_docs

router = APIRouter(prefix="/config", tags=["config"])


@router.get("/schema")
async def config_schema(manager: ManagerDep) -> dict[str, Any]:
    """``{"keys": [{"key", "type", "default", "allowed", "description", "derived"}, ...], "default_overrides":
    [...]}``, group choices (``model``, ``data``, ...) first; ``default_overrides``: the server's lines that
    every new run gets before its own (LABRUN_DEFAULT_OVERRIDES; a request's line for the same key wins)."""
    keys = await run_in_threadpool(schema_docs.describe)
    return {"keys": keys, "default_overrides": list(manager.validator.defaults)}
