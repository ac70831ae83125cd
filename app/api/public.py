"""The wire models, and the one place where the store's records become them.

Routes never build a ``RunPublic`` by hand: ``run_public``/``runs_public`` add what a client sees beside
the record (its queue position, its progress from ``progress.json``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.models import RunRecord, RunStatus
from app.runfiles import RunFiles
from app.store import RunStore


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overrides: list[str] = Field(default_factory=list, description="Hydra overrides, e.g. model=fno")
    config_name: str | None = Field(None, description="top-level config in conf/ (default neuraloperator)")


class Progress(BaseModel):
    epoch: int | None = None
    max_epochs: int | None = None
    step: int | None = None
    total: int | None = None
    fraction: float | None = None
    updated_at: str | float | None = None


class RunPublic(BaseModel):
    name: str
    status: RunStatus
    config_name: str
    overrides: list[str]
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    log_tail: str | None = Field(None, description="last lines of the log of a failed or cancelled run")
    gpus: list[int] = Field(default_factory=list)
    run_dir: str = Field(description="the run's directory, relative to the output directory")
    progress: Progress | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    rerun_of: str | None = None
    queue_position: int | None = Field(None, description="1 = next to start; only while queued")


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int = Field(description="how many runs match; data holds at most `limit` of them")


class Health(BaseModel):
    status: str  # "ok" or "degraded"
    launcher: str
    launcher_ok: bool
    detail: str
    gpus: list[int]
    queued: int
    running: int


def run_public(
    record: RunRecord, store: RunStore, files: RunFiles, queue_position: int | None = None
) -> RunPublic:
    if record.status == RunStatus.QUEUED and queue_position is None:
        queue_position = store.queue_position(record)
    progress = (files.progress(record.run_dir) if record.status != RunStatus.QUEUED else None) or {}
    return RunPublic(
        name=record.name,
        status=record.status,
        config_name=record.config_name,
        overrides=record.overrides,
        created_at=_utc(record.created_at),
        started_at=_utc(record.started_at),
        finished_at=_utc(record.finished_at),
        exit_code=record.exit_code,
        reason=record.reason,
        log_tail=record.log_tail,
        gpus=record.gpus,
        run_dir=record.run_dir,
        progress=progress.get("progress"),
        metrics=progress.get("metrics") or {},
        rerun_of=record.rerun_of,
        queue_position=queue_position,
    )


def runs_public(records: list[RunRecord], total: int, store: RunStore, files: RunFiles) -> RunsPublic:
    positions = store.queue_positions() if any(r.status == RunStatus.QUEUED for r in records) else {}
    return RunsPublic(data=[run_public(r, store, files, positions.get(r.name)) for r in records], count=total)


def _utc(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)
