"""The wire format of ``GET /runs/compare``: runs side by side, only what differs (``app/compare.py``)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from app.api.public import RunPublic
from app.compare import Difference
from app.models import RunRecord


class DifferencePublic(BaseModel):
    key: str
    values: list[Any] = Field(
        description="one per run, in the order asked; null where the run has no such key"
    )
    present: list[bool] = Field(description="whether each run has the key at all")


class ComparedRun(BaseModel):
    run: RunPublic
    duration_s: float | None = Field(
        description="started to finished (or to now, while it runs); null if it never started"
    )
    config_found: bool = Field(description="whether its resolved config (.hydra/config.yaml) could be read")


class RunsCompared(BaseModel):
    names: list[str]
    runs: list[ComparedRun]
    overrides: list[DifferencePublic] = Field(
        description="keys asked differently (own lines and the server's defaults they got; values compared as values)"
    )
    config: list[DifferencePublic] = Field(
        description="resolved config keys that differ, among the runs whose config could be read"
    )
    metrics: list[DifferencePublic] = Field(description="every final metric of each run, differing or not")


def duration(record: RunRecord, now: float | None = None) -> float | None:
    if record.started_at is None:
        return None
    end = record.finished_at if record.finished_at is not None else (now or time.time())
    return max(0.0, end - record.started_at)


def difference_public(found: list[Difference]) -> list[DifferencePublic]:
    return [DifferencePublic(key=d.key, values=d.values, present=d.present) for d in found]
