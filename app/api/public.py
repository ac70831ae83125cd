"""The wire models, and the one place where the store's records become them (``run_public``,
``sweep_summary``). What a client sees beside the record (its queue position, its progress) is gathered by
``app/api/view.py``; routes never build a ``RunPublic`` by hand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from app.api.gpus_public import GpuGuardPublic, OutsideProcess
from app.lifecycle.live import Stall
from app.lifecycle.stalls import describe
from app.models import Priority, RunRecord, RunStatus
from labrun.durations import parse_duration


def _duration(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        raise ValueError("a duration is seconds (a number) or text such as 6h, 90m, 1h30m, 2d")
    return parse_duration(value)


# A duration in a request: seconds, or 6h / 90m / 1h30m / 2d (labrun/durations.py); kept as seconds.
Duration = Annotated[float | None, BeforeValidator(_duration)]


class AfterCreate(BaseModel):
    """What a run waits for (docs/run-chains.md): one run or one sweep, and on what."""

    model_config = ConfigDict(extra="forbid")

    run: str | None = Field(None, description="a run's name")
    sweep: str | None = Field(None, description="a sweep's name (done when all its runs are)")
    when: str = Field("succeeded", description="succeeded (the default: else it is cancelled) or ended")


class AfterState(BaseModel):
    """A dependency of a run, as submitted; GET /runs/{name} adds the state of what it names now."""

    run: str | None = None
    sweep: str | None = None
    when: str = "succeeded"
    state: str | None = Field(
        None, description="a run's status (or deleted); a sweep's running or ended; only in GET /runs/{name}"
    )
    satisfied: bool | None = Field(None, description="done as asked; only in GET /runs/{name}")


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overrides: list[str] = Field(default_factory=list, description="Hydra overrides, e.g. model=fno")
    config_name: str | None = Field(None, description="top-level config in conf/ (default neuraloperator)")
    notify: list[str] | None = Field(
        None,
        description="events to be notified of (succeeded, failed, cancelled, sweep_finished, preempted, "
        "resumed); unset: your "
        "defaults (GET /me/notify/events); [] none",
    )
    stall_after_s: float | None = Field(
        None,
        description="its own stall limit: seconds without progress or output before it is stalled (up to "
        "the server's LABRUN_MAX_STALL_AFTER_S; default: its owner's, else LABRUN_STALL_AFTER_S)",
    )
    priority: Priority = Field(
        Priority.NORMAL,
        description="its class: high (an admin's allowance), normal, or low (may be preempted); "
        "see docs/priorities.md",
    )
    time_limit: Duration = Field(
        None,
        description="its time limit: running time over all its attempts, in seconds or as 6h, 90m, 1h30m, 2d "
        "(up to its owner's maximum; default: LABRUN_DEFAULT_TIME_LIMIT_S); near it, it saves a checkpoint "
        "and stops (docs/time-limits.md)",
    )

    after: list[AfterCreate] | None = Field(
        None,
        description="runs and sweeps it waits for: it stays queued until they are done, and is cancelled "
        "if one ends otherwise (docs/run-chains.md)",
    )

    def after_entries(self) -> list[dict[str, str]] | None:
        """``after`` as the lifecycle takes it (what is not set left out)."""
        return [a.model_dump(exclude_none=True) for a in self.after] if self.after is not None else None


class TimeLimitChange(BaseModel):
    """POST /runs/{name}/time-limit: one of the two."""

    model_config = ConfigDict(extra="forbid")

    time_limit: Duration = Field(
        None, description="its new limit: running time over all its attempts (6h, or seconds)"
    )
    extend_by: Duration = Field(None, description="time added to its limit (2h, or seconds)")
    no_limit: bool = Field(False, description="lift its limit (an admin, where its owner has a maximum)")

    @model_validator(mode="after")
    def _one(self) -> TimeLimitChange:
        given = [n for n in ("time_limit", "extend_by") if getattr(self, n) is not None] + (
            ["no_limit"] if self.no_limit else []
        )
        if len(given) != 1:
            raise ValueError("give exactly one of time_limit, extend_by or no_limit")
        return self


class ResumeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time_limit: Duration = Field(
        None,
        description="how long it may run from here (6h, or seconds; up to its owner's maximum); default: "
        "LABRUN_DEFAULT_TIME_LIMIT_S, else what its ended attempt was allowed",
    )


class StallExtension(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stall_after_s: float | None = Field(
        None, description="a longer stall limit for the run (up to LABRUN_MAX_STALL_AFTER_S); null: keep it"
    )


class Progress(BaseModel):
    epoch: int | None = None
    max_epochs: int | None = None
    step: int | None = None
    total: int | None = None
    fraction: float | None = None
    updated_at: str | float | None = None
    phase: str | None = Field(
        None, description="what the trainer is doing: data, training, validating, saving"
    )
    phase_done: int | None = Field(None, description="how far into its phase (cache chunks, batches)")
    phase_total: int | None = None


class StallPublic(BaseModel):
    """A running run that stopped making progress (docs/stalls.md)."""

    last_activity_at: dt.datetime = Field(description="the last change seen in its progress or its log")
    since: dt.datetime = Field(description="when it was called stalled (last activity + its limit)")
    cancel_at: dt.datetime = Field(description="when it is cancelled unless extended (POST .../extend-stall)")
    limit_s: float
    last_step: int | None = None
    last_step_at: dt.datetime | None = None
    message: str = Field(description="e.g. no progress and no output for 45 min (last step 1234 at 10:02)")


class StartEstimate(BaseModel):
    """When a queued run is expected to start (docs/budgets-and-estimates.md)."""

    start_at: dt.datetime | None = Field(
        None, description="the estimated start; null: no estimate (see reason)"
    )
    reason: str = Field(description="why it waits, e.g. waiting for run X ends in ~40 min (epoch 31 of 50)")
    sure: str = Field(description="how sure the estimate is: high, medium, low, none")


def start_estimate(found: Any) -> StartEstimate | None:
    """An ``app.lifecycle.estimates.Estimate`` as its wire model."""
    if found is None:
        return None
    return StartEstimate(start_at=_utc(found.start_at), reason=found.reason, sure=str(found.sure))


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
    code_differs: bool | None = Field(
        None,
        description="GET /runs/{name} of a rerun: whether the code it ran differs from the original's (commit "
        "and uncommitted changes, or an image's code hash, from both run.json files); null: not known (yet)",
    )
    cancelled_by: str | None = None
    attempts: int = Field(1, description="2 and up: resumed from its last checkpoint")
    priority: Priority = Field(Priority.NORMAL, description="its class: high, normal or low")
    queue_position: int | None = Field(
        None, description="only while queued: its place in its pool (CPU or GPU) in the fair order; 1 = next"
    )
    waiting_reason: str | None = Field(
        None,
        description="why it waits: queued behind a full disk, or running but requeued by its scheduler",
    )
    disk_bytes: int | None = Field(None, description="what its files take on disk, measured when it ended")
    log_cut_bytes: int | None = Field(
        None,
        description="bytes of its output cut from the middle of its log to keep it within the server's "
        "bound (LABRUN_MAX_LOG_BYTES; the logs' X-Log-Cut-Bytes); null: none",
    )
    disk_warning: str | None = Field(
        None, description="while the output directory's disk is nearly full because of this run's files"
    )
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
    default_overrides: list[str] | None = Field(
        None,
        description="the server's default overrides it got (LABRUN_DEFAULT_OVERRIDES), applied before its own",
    )
    stall_after_s: float | None = Field(None, description="its own stall limit, if it asked for one")
    time_limit_s: float | None = Field(
        None, description="its time limit: seconds of running time over all its attempts; null: none"
    )
    ran_s: float = Field(0.0, description="the running time of its attempts before the current one")
    time_limit_at: dt.datetime | None = Field(
        None,
        description="while running: when it reaches its time limit (it saves a checkpoint shortly before)",
    )
    stalled: bool = Field(False, description="running, but no progress and no output for its stall limit")
    stall: StallPublic | None = Field(None, description="while stalled: since when, and when it is cancelled")
    after: list[AfterState] | None = Field(
        None, description="what it waits for before it starts (docs/run-chains.md)"
    )
    init_from: str | None = Field(
        None, description="the run whose last checkpoint's weights it starts from (its config's init_from)"
    )
    estimate: StartEstimate | None = Field(
        None, description="only while queued: when it is expected to start, why it waits, how sure that is"
    )
    runs_as: Priority | None = Field(
        None,
        description="the class it starts (queued) or runs as when not its own: low while its owner is over "
        "their GPU-hour budget (runs_as_reason says so)",
    )
    runs_as_reason: str | None = None


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
    run: str | None = Field(
        None, description="the running run whose files alone hold the space that is missing, if one does"
    )


class Health(BaseModel):
    status: str  # "ok" or "degraded"
    launcher: str
    launcher_ok: bool
    detail: str
    store_ok: bool = Field(True, description="whether the run store can be written")
    store_problem: str | None = Field(None, description="why it cannot (read-only files, a full disk, ...)")
    gpus: list[int]
    queued: int
    running: int
    disk: Disk
    gpu_guard: GpuGuardPublic | None = Field(
        None, description="GPUs busy outside labrun: whether they are checked, and what holds them"
    )


def run_public(
    record: RunRecord,
    position: int | None,
    waiting: str | None,
    progress: dict[str, Any] | None,
    log_cut_bytes: int | None = None,
    disk_warning: str | None = None,
    stall: Stall | None = None,
    estimate: Any = None,
    low_reason: str | None = None,
) -> RunPublic:
    """The record's fields that the wire model has, by name (a field added to both shows with no line
    here; store times are Unix seconds, which pydantic reads as UTC), and what the view found beside it.
    Read from a dict of the record's fields: a wrapper read by attribute cost 4x as much on the polling
    path."""
    fields = {name: getattr(record, name) for name in _FROM_RECORD}
    progress = progress or {}
    fields.update(
        queue_position=position,
        waiting_reason=waiting,
        progress=progress.get("progress"),
        metrics=progress.get("metrics") or {},
        log_cut_bytes=log_cut_bytes,
        disk_warning=disk_warning,
    )
    if estimate is not None and record.status == RunStatus.QUEUED:
        fields.update(estimate=start_estimate(estimate))  # (an app.lifecycle.estimates.Estimate)
    if low_reason is not None and not record.status.is_terminal():
        fields.update(runs_as=Priority.LOW, runs_as_reason=low_reason)
    if stall is not None and record.status == RunStatus.RUNNING:
        fields.update(stalled=True, stall=stall_public(stall))
    if (
        record.time_limit_s is not None
        and record.started_at is not None
        and record.status == RunStatus.RUNNING
    ):
        fields["time_limit_at"] = record.started_at + max(0.0, record.time_limit_s - record.ran_s)
    return RunPublic.model_validate(fields)


def stall_public(stall: Stall, now: float | None = None) -> StallPublic:
    return StallPublic(
        last_activity_at=_utc(stall.last_activity) or dt.datetime.now(dt.UTC),
        since=_utc(stall.since) or dt.datetime.now(dt.UTC),
        cancel_at=_utc(stall.cancel_at) or dt.datetime.now(dt.UTC),
        limit_s=stall.limit_s,
        last_step=stall.last_step,
        last_step_at=_utc(stall.last_step_at),
        message=describe(stall, stall.since if now is None else now),
    )


_FROM_RECORD = tuple(f.name for f in dataclasses.fields(RunRecord) if f.name in RunPublic.model_fields)


# --- /queue and /users (app/api/routes/users.py) ------------------------------------------------------


class LimitsPublic(BaseModel):
    """A user's limits in force (their own where an admin set one, else the server's); null: none."""

    model_config = ConfigDict(from_attributes=True)

    max_gpus: int | None = Field(None, description="GPUs in use at once")
    max_queued: int | None = Field(None, description="runs queued at once")
    max_run_s: float | None = Field(
        None, description="the longest time limit they may give a run (seconds of running time left)"
    )
    stall_after_s: float | None = Field(
        None, description="seconds without progress or output before a running run is stalled"
    )
    high_gpus: int | None = Field(
        None, description="GPUs their high-priority runs may hold at once (0: none; null: no bound, admins)"
    )


class RunningEntry(BaseModel):
    name: str
    gpus: list[int]
    pool: str = Field(description="gpu or cpu")
    priority: Priority = Priority.NORMAL
    preempting_for: str | None = Field(
        None, description="being preempted (saving a checkpoint) for a waiting run of this class"
    )


class QueuedEntry(BaseModel):
    name: str
    pool: str = Field(description="gpu or cpu")
    queue_position: int | None = Field(None, description="its place in its pool in the fair order; 1 = next")
    priority: Priority = Priority.NORMAL
    waiting_reason: str | None = Field(
        None,
        description="why it does not start now, where known: e.g. what it waits for (docs/run-chains.md)",
    )
    estimate: StartEstimate | None = Field(None, description="when it is expected to start, and why it waits")
    runs_as: Priority | None = Field(
        None, description="low while its owner is over budget; null: its own class"
    )


class BudgetPublic(BaseModel):
    """A user's use of one pool over the budget window, and their budget (docs/budgets-and-estimates.md)."""

    pool: str = Field(description="gpu (GPU-hours) or cpu (CPU run-hours)")
    used_hours: float = Field(description="used within the window, running runs up to now")
    budget_hours: float | None = Field(description="their budget per window; null: none")
    window_days: float
    over: bool = Field(description="over budget: their runs of this pool start as low (preemptible)")


class UserQueue(BaseModel):
    running: list[RunningEntry]
    queued: list[QueuedEntry] = Field(description="in the fair order")
    usage: dict[str, float] = Field(description="recent use per pool (decayed GPU- or run-seconds)")
    limits: LimitsPublic
    budgets: list[BudgetPublic] = Field(default_factory=list, description="GPU-hour and CPU-hour budgets")


class QueuePublic(BaseModel):
    half_life_s: float = Field(description="the half-life of fair share's memory of use")
    users: dict[str, UserQueue]
    gpus_outside: list[OutsideProcess] = Field(
        default_factory=list, description="processes outside labrun that keep GPUs from being handed out"
    )


class UserPublic(BaseModel):
    name: str
    admin: bool
    active: bool = Field(description="false once revoked (a user is never deleted)")
    limits: LimitsPublic


class UsersPublic(BaseModel):
    users: list[UserPublic]


class UserLimitsPublic(BaseModel):
    name: str
    limits: LimitsPublic


class MyUsage(BaseModel):
    name: str = Field(description="the caller")
    budgets: list[BudgetPublic] = Field(description="per pool: used within the window, and the budget")


def budget_public(balance: Any) -> BudgetPublic:
    """An ``app.budgets.Balance`` as its wire model."""
    return BudgetPublic(
        pool=balance.pool,
        used_hours=round(balance.used_hours, 6),  # (to the second)
        budget_hours=balance.budget_hours,
        window_days=balance.window_days,
        over=balance.over,
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


def sweep_summary(sweep: Any, counts: Mapping[str, int]) -> SweepSummary:
    """The sweep's own fields by name (``from_attributes``), with its runs' counts."""
    return SweepSummary.model_validate(_SweepAnswer(sweep, counts), from_attributes=True)


class _SweepAnswer:
    __slots__ = ("_sweep", "counts", "finished")

    def __init__(self, sweep: Any, counts: Mapping[str, int]) -> None:
        self._sweep, self.counts = sweep, dict(counts)
        self.finished = not counts.get("queued") and not counts.get("running")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sweep, name)
