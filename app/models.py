"""Run statuses, the store's record of a run, and the wire models (the record is never the wire format)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


@dataclass
class RunRecord:
    """One row of the store."""

    seq: int
    name: str
    status: RunStatus
    config_name: str
    overrides: list[str]
    run_dir: str  # relative to the output dir
    gpu_need: int  # GPUs the composed config asks for; 0 = a CPU run
    created_at: float
    seed: Any = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    log_tail: str | None = None
    gpus: list[int] = field(default_factory=list)
    handle: str | None = None
    rerun_of: str | None = None
    idempotency_key: str | None = None
    cancel_requested: bool = False


# --- wire models ---------------------------------------------------------------------------------------


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

    @classmethod
    def from_record(
        cls, record: RunRecord, queue_position: int | None = None, progress: dict[str, Any] | None = None
    ) -> RunPublic:
        progress = progress or {}
        return cls(
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


def _utc(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)
