"""The wire models, and the one place where the store's records become them.

Routes never build a ``RunPublic`` by hand: ``run_public``/``runs_public`` add what a client sees beside
the record (its queue position, its progress from ``progress.json``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from app.models import RunRecord, RunStatus
from app.runfiles import RunFiles

if TYPE_CHECKING:
    from app.lifecycle import RunManager


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
    owner: str | None = Field(None, description="who submitted it")
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
    cancelled_by: str | None = None
    attempts: int = Field(1, description="2 and up: resumed from its last checkpoint")
    queue_position: int | None = Field(
        None, description="only while queued: its place in its pool (CPU or GPU) in the fair order; 1 = next"
    )
    waiting_reason: str | None = Field(
        None,
        description="why it waits: queued behind a full disk, or running but requeued by its scheduler",
    )
    disk_bytes: int | None = Field(None, description="what its files take on disk, measured when it ended")
    deleted_at: dt.datetime | None = Field(
        None, description="its files were deleted (DELETE); the record stays"
    )
    deleted_by: str | None = None
    resources: dict[str, int] | None = Field(
        None,
        description="estimated at submission: data_bytes, param_count, param_bytes, training_state_bytes",
    )
    sweep: str | None = Field(None, description="the sweep it belongs to (GET /sweeps/<sweep>), if any")
    sweep_index: int | None = Field(None, description="its place in the sweep (0-based)")


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int = Field(description="how many runs match; data holds at most `limit` of them")
    next_before: int | None = Field(
        None, description="the next page: pass it as before=...; null on the last page"
    )


class Disk(BaseModel):
    ok: bool
    free_bytes: int | None
    total_bytes: int | None
    min_free_bytes: int
    min_free_percent: float
    reason: str | None = None


class Health(BaseModel):
    status: str  # "ok" or "degraded"
    launcher: str
    launcher_ok: bool
    detail: str
    gpus: list[int]
    queued: int
    running: int
    disk: Disk


class RunView:
    """Turns records into answers: adds what a client sees beside the record (its place in the fair queue,
    why queued runs wait, its progress from progress.json, an outcome not yet recorded).

    The polling paths (``one_json``, ``many_json``) keep each run's JSON: a run whose record (the store
    hands out the same object while its row is unchanged), place in the queue, waiting reason and
    progress (the same parsed object while progress.json is unchanged) are all as before is not built and
    serialized again. That was most of the cost of a page of 50 runs."""

    def __init__(self, files: RunFiles, manager: RunManager) -> None:
        self.files, self.manager = files, manager

    def one(self, record: RunRecord, positions: Mapping[str, int] | None = None) -> RunPublic:
        return _public(*self._inputs(record, positions))

    def many(self, records: list[RunRecord], total: int, next_before: int | None = None) -> RunsPublic:
        positions = self._positions(records)
        return RunsPublic(
            data=[self.one(r, positions) for r in records], count=total, next_before=next_before
        )

    def one_json(
        self, record: RunRecord, positions: Mapping[str, int] | None = None, now: float | None = None
    ) -> bytes:
        """``one(record).model_dump_json()``, from the cache when nothing it shows has changed."""
        now = time.monotonic() if now is None else now
        key = id(record)
        hit = _FRAGMENTS.get(key)
        # The entry holds the record and progress objects themselves, so neither id can be reused by
        # another object while it is kept; ``is`` compares them without looking inside.
        if hit is not None and hit[0] is record and record.status.is_terminal() and now - hit[4] < RECHECK_S:
            return hit[3]  # an ended run shows its record and its last progress: nothing else to look at
        inputs = self._inputs(record, positions)
        if inputs[0] is not record:  # an outcome not yet recorded: a passing state, not worth keeping
            return _public(*inputs).model_dump_json().encode()
        if hit is not None and hit[0] is record and hit[1] == inputs[1:3] and hit[2] is inputs[3]:
            body = hit[3]
        else:
            body = _public(*inputs).model_dump_json().encode()
            if len(_FRAGMENTS) >= FRAGMENTS_KEPT:
                _FRAGMENTS.clear()
        _FRAGMENTS[key] = (record, inputs[1:3], inputs[3], body, now)
        return body

    def many_json(self, records: list[RunRecord], total: int, next_before: int | None = None) -> bytes:
        """``many(...).model_dump_json()``, each run from ``one_json``."""
        positions, now = self._positions(records), time.monotonic()
        data = b",".join([self.one_json(r, positions, now) for r in records])
        after = b"null" if next_before is None else str(int(next_before)).encode()
        return b'{"data":[%s],"count":%d,"next_before":%s}' % (data, total, after)

    def _positions(self, records: list[RunRecord]) -> Mapping[str, int]:
        any_queued = any(r.status == RunStatus.QUEUED for r in records)
        return self.manager.queue_positions() if any_queued else {}

    def _inputs(
        self, record: RunRecord, positions: Mapping[str, int] | None
    ) -> tuple[RunRecord, int | None, str | None, dict[str, Any] | None]:
        """Everything a run's answer is made of: (record, queue position, waiting reason, progress)."""
        ending = self.manager.ended.get(record.name) if record.status == RunStatus.RUNNING else None
        if ending is not None:  # it ended; the store has not taken the write yet (a full disk)
            record = dataclasses.replace(
                record,
                status=ending.status,
                exit_code=ending.exit_code,
                reason=ending.reason,
                log_tail=ending.log_tail,
                finished_at=ending.finished_at,
            )
        queued = record.status == RunStatus.QUEUED
        if queued and positions is None:
            positions = self.manager.queue_positions()
        position = (positions or {}).get(record.name) if queued else None
        progress = self.files.progress(record.run_dir) if not queued else None
        return record, position, self._waiting(record, queued), progress

    def _waiting(self, record: RunRecord, queued: bool) -> str | None:
        if queued:
            return self.manager.waiting_reason
        attempt = self.manager.requeued.get(record.name) if record.status == RunStatus.RUNNING else None
        return f"requeued: preempted, waiting to run again as attempt {attempt}" if attempt else None


FRAGMENTS_KEPT = 4096  # runs' JSON kept (about 1 KB each)
# An ended run's progress.json is final, but a shared filesystem may show its last write late: looked at
# again at most this often, not on every poll of a page of finished runs (a stat each).
RECHECK_S = 2.0
_FRAGMENTS: dict[int, tuple[RunRecord, tuple[int | None, str | None], Any, bytes, float]] = {}


def _public(
    record: RunRecord, position: int | None, waiting: str | None, progress: dict[str, Any] | None
) -> RunPublic:
    progress = progress or {}
    return RunPublic(
        name=record.name,
        status=record.status,
        owner=record.owner,
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
        cancelled_by=record.cancelled_by,
        attempts=record.attempts,
        queue_position=position,
        waiting_reason=waiting,
        disk_bytes=record.disk_bytes,
        deleted_at=_utc(record.deleted_at),
        deleted_by=record.deleted_by,
        resources=record.resources,
        sweep=record.sweep,
        sweep_index=record.sweep_index,
    )


class Usage(BaseModel):
    disk_bytes: int = Field(description="what the runs' files take, as measured when each ended")
    runs_measured: int
    runs_deleted: int
    free_bytes: int | None = Field(description="free space of the output directory's filesystem")
    total_bytes: int | None
    largest: list[dict[str, Any]] = Field(description="the runs that take the most space (name, disk_bytes)")


def _utc(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


# --- sweeps (app/sweeps.py) -------------------------------------------------------------------------------


class SweepRun(BaseModel):
    index: int
    name: str
    status: RunStatus
    overrides: list[str] = Field(description="the lines that tell it apart: those of the swept keys")
    val_loss: float | None = Field(None, description="its latest (at the end: final) validation loss")
    progress: Progress | None = None
    reason: str | None = None
    rerun_of: str | None = None
    queue_position: int | None = None


class SweepSummary(BaseModel):
    name: str
    owner: str | None
    config_name: str
    overrides: list[str] = Field(description="as requested, sweep syntax and all")
    swept: list[str] = Field(description="the keys it varies")
    size: int = Field(description="how many runs it expanded into")
    run_dir: str = Field(description="its folder, relative to the output directory")
    created_at: dt.datetime
    counts: dict[str, int] = Field(description="its runs (the latest attempt of each) by status")
    finished: bool = Field(description="no run of it is queued or running")


class SweepPublic(SweepSummary):
    best: SweepRun | None = Field(None, description="the lowest val_loss so far (succeeded or running runs)")
    runs: list[SweepRun] = Field(description="by index; the latest attempt of each")


class SweepsPublic(BaseModel):
    data: list[SweepSummary]
    next_before: int | None = Field(None, description="the next page: pass it as before=...")


class SweepView:
    """A sweep's record and runs as answers; each run is seen exactly as ``RunView`` sees it."""

    def __init__(self, runs: RunView) -> None:
        self.runs = runs

    def summary(self, sweep: Any, counts: Mapping[str, int]) -> SweepSummary:
        return SweepSummary(
            name=sweep.name,
            owner=sweep.owner,
            config_name=sweep.config_name,
            overrides=sweep.overrides,
            swept=sweep.swept,
            size=sweep.size,
            run_dir=sweep.run_dir,
            created_at=_utc(sweep.created_at),
            counts=dict(counts),
            finished=not counts.get("queued") and not counts.get("running"),
        )

    def one(self, sweep: Any, records: list[RunRecord], key_lines: Any) -> SweepPublic:
        """``key_lines(record)``: the run's lines of the swept keys (``app.sweeps.key_overrides``)."""
        any_queued = any(r.status == RunStatus.QUEUED for r in records)
        positions = self.runs.manager.queue_positions() if any_queued else {}
        runs = []
        counts = dict.fromkeys([s.value for s in RunStatus], 0)
        for record in records:
            public = self.runs.one(record, positions)
            counts[public.status.value] += 1
            loss = public.metrics.get("val_loss")
            runs.append(
                SweepRun(
                    index=record.sweep_index or 0,
                    name=public.name,
                    status=public.status,
                    overrides=key_lines(record),
                    val_loss=loss if isinstance(loss, int | float) else None,
                    progress=public.progress,
                    reason=public.reason,
                    rerun_of=public.rerun_of,
                    queue_position=public.queue_position,
                )
            )
        ranked = [
            r for r in runs if r.val_loss is not None and r.status in (RunStatus.SUCCEEDED, RunStatus.RUNNING)
        ]
        best = min(ranked, key=lambda r: r.val_loss or 0.0) if ranked else None
        return SweepPublic(**self.summary(sweep, counts).model_dump(), best=best, runs=runs)
