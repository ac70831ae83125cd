"""``RunManager``: the lifecycle's one public surface. It owns the lock and the live state
(``LiveState``), builds the rooms around them, runs their threads, and hands each request to its room."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from app.budgets import Budgets
from app.core.config import Settings
from app.diskspace import DiskGuard
from app.fairshare import FairShare
from app.gpus import GpuGuard
from app.launchers.base import Launcher
from app.lifecycle.admission import Admission
from app.lifecycle.cancel import Canceller
from app.lifecycle.dependencies import Dependencies, launch_checkpoint
from app.lifecycle.dispatch import Dispatcher
from app.lifecycle.estimating import StartEstimates
from app.lifecycle.limits import Limits, UserLimits
from app.lifecycle.live import Context, LiveState, RunLive
from app.lifecycle.picking import FairSharePicking, PickingPolicy
from app.lifecycle.preemption import Preempter
from app.lifecycle.recovery import Recovery
from app.lifecycle.reservations import ReservationRoom
from app.lifecycle.stalls import StallWatch
from app.lifecycle.supervision import Supervisor
from app.lifecycle.timekeeper import TimeKeeper
from app.models import Priority, RunRecord, RunStatus, SweepRecord
from app.scheduling import Slots
from app.statedir import StateDir
from app.store import RunStore
from app.users import LOCAL, Users
from app.validation import RunValidator


class RunManager:
    def __init__(
        self,
        settings: Settings,
        store: RunStore,
        launcher: Launcher,
        validator: RunValidator,
        state: StateDir,
        gpus: Sequence[int],
        disk: DiskGuard | None = None,
        policy: PickingPolicy | None = None,
    ) -> None:
        """``policy``: how dispatch picks the runs to start (default: fair share, ``picking.py``)."""
        self.settings, self.store, self.launcher = settings, store, launcher
        self.validator, self.state, self.gpus = validator, state, tuple(gpus)
        self.disk = disk or DiskGuard(settings.output_dir, settings.min_free_bytes, settings.min_free_percent)
        self.disk.watch(self._running_files)  # what a short disk may be blamed on
        self.closing = threading.Event()  # the server is shutting down: log followers end their streams
        self.users = Users(store)
        self.fair = FairShare(settings.fair_share_half_life_s)
        # A launcher that places runs itself gets no GPU ids from us, and no cap: its scheduler queues.
        self._live = LiveState(Slots(gpus, settings.max_cpu_runs, unlimited=launcher.places_runs))
        self._limits = Limits(settings, self.users)
        # GPUs busy outside labrun (app/gpus/): a pass per interval, read by dispatch and the API
        self.guard = GpuGuard(
            settings, self.gpus, store, state, self._own_runs, self.fair, places_runs=launcher.places_runs
        )
        self.guard.on_change = lambda: self._live.wake(queue_changed=False)
        self.ctx = ctx = Context(
            settings, store, launcher, state, self.disk, self._limits, self._live, self.guard
        )
        self.admission = Admission(ctx, validator)
        self.supervisor = Supervisor(ctx, self.fair)
        self.canceller = Canceller(ctx, self.supervisor)
        inventory = None if launcher.places_runs else len(self.gpus)
        # labrun preempts where it places runs; a cluster preempts by its own rules (docs/priorities.md)
        self.preempter = None if launcher.places_runs else Preempter(ctx, self.fair)
        if self.preempter is not None:
            self.supervisor.preempted = self.preempter.ends
        policy = policy or FairSharePicking(self.fair)
        # GPUs booked for a window (app/reservations.py); a cluster keeps its own (docs/reservations.md)
        self.reservations = ReservationRoom(ctx, self.preempter, self.gpus, self.users)
        self.dispatcher = Dispatcher(
            ctx, policy, self.supervisor, inventory, self.preempter, self.reservations
        )
        # GPU-hour budgets (app/budgets.py) and start estimates (estimating.py)
        self.budgets = Budgets(settings, self.users, store)
        self.dispatcher.budgets = self.budgets
        self.estimates = StartEstimates(ctx, policy, self.budgets, self.preempter)
        self.recovery = Recovery(ctx, self.fair, self.supervisor, self.canceller, self.preempter)
        # runs that wait for others, and runs that start from another's checkpoint (docs/run-chains.md)
        self.dependencies = Dependencies(ctx)
        self.dispatcher.held = self.dependencies.held
        self.dispatcher.init_checkpoint = lambda record: launch_checkpoint(ctx, record)
        self.stalls = StallWatch(ctx, self.canceller)
        self.timekeeper = TimeKeeper(ctx)
        self.supervisor.timekeeper = self.timekeeper
        self.timekeeper.deadline = self.reservations.deadline
        self._threads: list[threading.Thread] = []

    # --- start-up and shut-down ---------------------------------------------------------------------

    def reconcile(self) -> None:
        """Recover every unfinished run before accepting new work (after a restart or a kill -9)."""
        self.stalls.restore()  # first: a run that ended meanwhile is recorded with its stall's reason
        self.recovery.reconcile()

    def start(self) -> None:
        self.guard.start()  # its first pass before the first dispatch round
        loops: list[tuple[str, Callable[[], None]]] = [("dispatcher", self.dispatcher.loop)]
        if self.launcher.batch_polling:
            loops.append(("poller", self.supervisor.poll_loop))
        loops.append(("timekeeper", self.timekeeper.loop))
        loops.append(("stallwatch", self.stalls.loop))
        loops.append(("dependencies", self.dependencies.loop))
        loops.append(("estimates", self.estimates.loop))
        for name, loop in loops:
            thread = threading.Thread(target=loop, name=f"labrun-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop dispatching and watching; the runs themselves carry on and are re-attached next start."""
        self.closing.set()
        self._live.stopping.set()
        with self._live.cond:
            self._live.cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        self.guard.stop()

    def _own_runs(self) -> list[tuple[str, str | None]]:
        """(name, handle) of every run whose processes are labrun's own: running, being started, or found
        queued at start-up (it may be running already)."""
        live = self._live
        with live.cond:  # the sets change under this lock
            others: list[tuple[str, str | None]] = [(n, None) for n in (*live.starting, *live.unreconciled)]
        return [(r.name, r.handle) for r in self.store.running()] + others

    def _running_files(self) -> list[tuple[str, list[Path]]]:
        """Each running run's files: its run directory and its state folder (its log)."""
        running = self.store.list([RunStatus.RUNNING], limit=1_000_000)
        return [(r.name, [self.settings.output_dir / r.run_dir, self.state.run(r.name)]) for r in running]

    # --- what the API reads -----------------------------------------------------------------------------

    def get(self, name: str) -> RunRecord:
        return self.ctx.get(name)

    def live(self, name: str) -> RunLive:
        """What is known of the run beyond its record (an end not yet recorded, a requeue, why queued runs
        wait). Never waits for the lock: each part is one look-up of a value the rooms replace whole."""
        return self._live.of(name)

    def limits(self, owner: str) -> UserLimits:
        """The user's limits: their own where an admin set one, else the server's."""
        return self._limits.of(owner)

    def queue_positions(self) -> dict[str, int]:
        return self.dispatcher.queue_positions()

    # --- requests -----------------------------------------------------------------------------------------

    def submit(
        self,
        overrides: Sequence[str],
        config_name: str | None = None,
        idempotency_key: str | None = None,
        rerun_of: str | None = None,
        owner: str = LOCAL,
        stall_after_s: float | None = None,
        priority: Priority = Priority.NORMAL,
        time_limit_s: float | None = None,
        after: Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[RunRecord, bool]:
        """``after``: the runs and sweeps it waits for (docs/run-chains.md)."""
        return self.admission.submit(
            overrides,
            config_name,
            idempotency_key,
            rerun_of,
            owner,
            stall_after_s=stall_after_s,
            priority=priority,
            time_limit_s=time_limit_s,
            after=after,
        )

    def rerun(
        self, name: str, idempotency_key: str | None = None, owner: str = LOCAL
    ) -> tuple[RunRecord, bool]:
        return self.admission.rerun(name, idempotency_key, owner)

    def resume(self, name: str, time_limit_s: float | None = None) -> RunRecord:
        return self.admission.resume(name, time_limit_s)

    def queue_together(
        self, records: list[RunRecord], owner: str, sweep: SweepRecord | None = None
    ) -> list[RunRecord]:
        return self.admission.queue_together(records, owner, sweep)

    def check_can_queue(self, owner: str, count: int = 1) -> None:
        self.admission.check_can_queue(owner, count)

    def cancel(self, name: str, by: str = LOCAL) -> RunRecord:
        return self.canceller.cancel(name, by)

    def extend_stall(self, name: str, stall_after_s: float | None = None) -> RunRecord:
        """A stalled (or any running) run's stall clock starts again; optionally with a limit of its own."""
        return self.stalls.extend(name, stall_after_s)

    def set_time_limit(self, name: str, seconds: float | None, by_admin: bool = False) -> RunRecord:
        """A queued or running run's new time limit (docs/time-limits.md)."""
        return self.timekeeper.set_limit(name, seconds, by_admin)

    def delete(self, name: str, by: str = LOCAL) -> RunRecord:
        return self.admission.delete(name, by)
