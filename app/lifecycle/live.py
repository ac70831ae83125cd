"""The lifecycle's live state: what it knows beyond the store's records, shared by its rooms.

``LiveState`` is owned by the facade (``RunManager``) and handed to each room; every change to it happens
under its one lock (``cond``), which is also how the rooms wake each other (the dispatcher waits on it).
``RunLive`` is what a reader outside the lifecycle (the API's view) may see of one run: a frozen value.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.errors import RunNotFound
from app.models import RunRecord, RunStatus

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.diskspace import DiskGuard
    from app.gpus import GpuGuard
    from app.launchers.base import Launcher
    from app.lifecycle.limits import Limits
    from app.scheduling import Slots
    from app.statedir import StateDir
    from app.store import RunStore

ENGINE_RETRY_S = 2.0  # when the engine is down, try to start queued runs again this often
DISK_RETRY_S = 2.0  # while the disk is full (or the output directory gone), look again this often
MAX_BACKOFF_S = 5.0  # the longest wait between two tries to record an outcome the store refused


@dataclass(frozen=True)
class Ending:
    """How a run ended, as it will be recorded."""

    status: RunStatus
    exit_code: int | None
    reason: str | None
    log_tail: str | None
    finished_at: float


@dataclass(frozen=True, slots=True)
class Stall:
    """A running run that stopped making progress (``stalls.py``): no change to its progress.json and no
    new output in its log since ``last_activity``; it is cancelled at ``cancel_at`` unless extended."""

    last_activity: float  # the last change seen in its progress or its log
    since: float  # when it was called stalled: last_activity + limit_s
    cancel_at: float  # since + the grace period
    limit_s: float
    last_step: int | None = None  # the trainer's last step, and when it was first seen
    last_step_at: float | None = None
    # Stalled by the GPU rule (stalls.py): these GPUs stayed at 0% while the trainer said it was training,
    # since last_activity (the last time one of them worked). Empty: by the rule of progress and output.
    idle_gpus: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RunLive:
    """What the lifecycle knows of one run beyond its record, for the API to show."""

    ending: Ending | None = None  # it ended; the store has not taken the write yet (a full disk)
    requeued_attempt: int | None = None  # the engine requeued it (preempted): the attempt it waits to run as
    waiting_reason: str | None = None  # why queued runs do not start now (the disk), if they wait
    stall: Stall | None = None  # it stopped making progress (stalls.py)


NOTHING = RunLive()


class LiveState:
    """The live state the rooms share. Mutated only under ``cond``; read without it where one dict look-up
    is the whole read (the API's view: a poll must never wait for a dispatch round)."""

    def __init__(self, slots: Slots) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.slots = slots  # which GPUs and CPU slots are taken (app/scheduling.py)
        self.starting: set[str] = set()  # being launched: a cancel waits for these
        self.active: dict[str, str] = {}  # running run -> handle, while a watcher follows it
        self.cancelling: set[str] = set()
        self.ended: dict[str, Ending] = {}  # runs that ended, until the store has recorded it
        self.requeued: dict[str, int] = {}  # runs the engine requeued, waiting to run again -> next attempt
        self.timed_out: dict[str, float] = {}  # runs being stopped at their time limit -> it (timekeeper.py)
        self.stalls: dict[str, Stall] = {}  # running runs that stopped making progress (stalls.py)
        self.stalled_out: dict[str, str] = {}  # runs cancelled for a stall -> the reason recorded
        self.unreconciled: set[str] = set()  # queued runs the engine could not be asked about at start-up
        self.waiting_reason: str | None = None
        self.gpu_waiting: dict[str, str] = {}  # queued run -> the GPUs busy outside labrun it waits for
        self.preempting: dict[str, str] = {}  # run being preempted -> the waiting run it stops for
        self.preempt_waiting: dict[
            str, str
        ] = {}  # queued run -> why: the runs it is preempting (replaced whole)
        self.after_waiting: dict[str, str] = {}  # queued run -> what it waits for (dependencies.py; whole)
        # runs started as low because their owner was over budget (app/budgets.py): preemptible until they
        # end (kept in memory only: after a restart they count as their own class again)
        self.budget_low: set[str] = set()
        self.wakeup = True  # the dispatcher has something to look at
        self.retry_at = 0.0  # when the dispatcher looks again by itself (0: only when woken)
        self.order_dirty = True  # the queue changed: queue positions are computed again
        self.stopping = threading.Event()

    def wake(self, queue_changed: bool = True) -> None:
        """Wake the dispatcher (a run was queued, or one ended and freed its slot)."""
        with self.cond:
            self.wakeup = True
            self.order_dirty = self.order_dirty or queue_changed
            self.cond.notify_all()

    def retry_in(self, seconds: float) -> None:
        with self.cond:
            self.retry_at = time.monotonic() + seconds
            self.cond.notify_all()

    def of(self, name: str) -> RunLive:
        ending, attempt = self.ended.get(name), self.requeued.get(name)
        # (dicts replaced whole: no lock)
        waiting = (
            self.after_waiting.get(name)  # first: until it is done, nothing else keeps the run waiting
            or self.waiting_reason
            or self.gpu_waiting.get(name)
            or self.preempt_waiting.get(name)
        )
        stall = self.stalls.get(name)
        if ending is None and attempt is None and waiting is None and stall is None:
            return NOTHING  # the common case, without making a value
        return RunLive(ending, attempt, waiting, stall)


@dataclass(frozen=True)
class Context:
    """What every room works with: the facade's parts and its live state."""

    settings: Settings
    store: RunStore
    launcher: Launcher
    state: StateDir
    disk: DiskGuard
    limits: Limits
    live: LiveState
    guard: GpuGuard | None = None  # GPUs busy outside labrun (app/gpus/); None: not checked

    def get(self, name: str) -> RunRecord:
        """The run's record; RunNotFound (404) when there is none."""
        record = self.store.get(name)
        if record is None:
            raise RunNotFound(name)
        return record
