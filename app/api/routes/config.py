"""GET /config/schema: every key a run's overrides may set, generated from the experiment's schema
(``trainer/schema.py``) by ``trainer/schema_docs.py``: its type, default, allowed values and description.
The documentation's table of keys (docs/reference/experiment-keys.md) is made from the same rows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from trainer import schema_docs

router = APIRouter(prefix="/config", tags=["config"])


@router.get("/schema")
async def config_schema() -> dict[str, Any]:
    """``{"keys": [{"key", "type", "default", "allowed", "description", "derived"}, ...]}``, group choices
    (``model``, ``data``, ...) first."""
    return {"keys": await run_in_threadpool(schema_docs.describe)}
