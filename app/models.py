"""Run statuses and the store's records (a run, a sweep, a user): the domain's own types (the wire models
are in ``app/api/public.py``; a record is never the wire format). Records are frozen: the store shares
one decoded record among its readers, and the API's JSON cache of runs keys on them, so a record never
changes after it is read; ``dataclasses.replace`` makes a changed copy."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from labrun import statuses


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(RunStatus(s) for s in statuses.TERMINAL)  # the client's list too (labrun/statuses.py)


class Priority(StrEnum):
    """A run's priority class (docs/priorities.md): a higher class starts first and may preempt a lower,
    preemptible one (``low`` always; ``normal`` where the server allows it)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Higher goes first: high 2, normal 1, low 0."""
        return _RANKS[self]


_RANKS = {Priority.HIGH: 2, Priority.NORMAL: 1, Priority.LOW: 0}


@dataclass(frozen=True)
class RunRecord:
    """One row of the store. A record read from the store may be shared with other readers (the store
    decodes each row once), hence frozen. ``gpus`` and ``overrides`` are lists: never change them either."""

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
    launcher: str | None = None  # the launcher that started it (None: not started yet)
    resources: dict[str, int] | None = None  # the estimate at submission (trainer/estimate.py)
    disk_bytes: int | None = None  # what its files take, measured when it ended
    deleted_at: float | None = None  # its files were deleted (the record stays: the name is never reused)
    deleted_by: str | None = None
    owner: str | None = None  # who submitted it (the legacy owner for runs from before users existed)
    cancelled_by: str | None = None
    sweep: str | None = None  # the sweep it belongs to (app/sweeps.py), if any
    sweep_index: int | None = None  # its place in the sweep's expansion (0-based; a rerun keeps it)
    attempts: int = 1  # 2 and up: resumed from its last checkpoint (POST /runs/{name}/resume)
    # The server's default overrides it got (LABRUN_DEFAULT_OVERRIDES, app/defaults.py), applied before
    # ``overrides`` (the request's own): kept so a rerun is exact after the server's defaults change.
    default_overrides: list[str] | None = None
    stall_after_s: float | None = None  # its own stall limit, asked for at submission (None: its owner's)
    priority: Priority = Priority.NORMAL  # its class (docs/priorities.md)
    # A preemption of it is under way, for a waiting run of this class (app/lifecycle/preemption.py): kept in
    # the store so that a restart still sees its end as a preemption. None: not being preempted.
    preempted_by: str | None = None
    # Its time limit: seconds of running time over all its attempts (None: none). ``ran_s``: the running
    # time of its attempts before the current one (app/lifecycle/timelimits.py).
    time_limit_s: float | None = None
    ran_s: float = 0.0
    # What it waits for before it may start (docs/run-chains.md): [{"run" or "sweep": NAME, "when":
    # "succeeded" or "ended"}], as submitted; None: nothing. Read by app/lifecycle/dependencies.py.
    after: list[dict[str, str]] | None = None
    init_from: str | None = None  # the run whose last checkpoint's weights it starts from (its config's key)


@dataclass(frozen=True)
class SweepRecord:
    """A sweep's row: what was asked for; its runs are rows of ``runs`` with ``sweep`` = its name."""

    seq: int
    name: str
    owner: str | None
    config_name: str
    overrides: list[str]  # as requested, sweep syntax and all
    swept: list[str]  # the keys it varies (Hydra's key elements, e.g. model, training.lr, +extra.x)
    size: int  # runs it expanded into
    run_dir: str  # its folder, relative to the output directory
    created_at: float
    idempotency_key: str | None = None


@dataclass(frozen=True)
class User:
    name: str
    is_admin: bool
    created_at: float
    revoked_at: float | None = None
    max_gpus: int | None = None  # None: the server's default
    max_queued: int | None = None
    max_run_s: float | None = None
    stall_after_s: float | None = None  # seconds without progress or output before a run is stalled
    high_gpus: int | None = (
        None  # GPUs their high-priority runs may hold at once (None: the server's default)
    )
    budget_gpu_hours: float | None = None  # GPU-hours per budget window (None: the server's; 0: none)
    budget_cpu_hours: float | None = None  # CPU run-hours per budget window (None: the server's; 0: none)

    @property
    def active(self) -> bool:
        return self.revoked_at is None
