"""RunManager: the whole run lifecycle in one place — submit, dispatch, watch, finish, cancel, rerun, recover.

    submit ──> queued ──dispatch──> running ──watcher sees the exit──> succeeded | failed | cancelled
                  └──cancel──> cancelled          └──cancel: SIGTERM, grace, SIGKILL──> cancelled

Invariants, and how they hold:
- Every state change happens under one lock (``self._cond``) and is a compare-and-set in the store, so a
  cancel can never race a dispatch: a run being launched is "starting", and a cancel waits for that.
- Crash safety: GPUs are noted in the store, then the launcher starts the run, then queued -> running is
  recorded with its handle. A kill -9 anywhere in between is repaired by ``reconcile``: the launcher finds
  every run it started by name, so nothing runs twice and nothing is lost.
- Resources (``app/scheduling.py``): a GPU is owned by at most one run; CPU runs are capped at MAX_CPU_RUNS.
  Dispatch is FIFO within each pool (a run waiting for GPUs does not hold back CPU runs, and vice versa).
  A launcher that places runs itself (a cluster) gets every queued run at once: its scheduler queues them.
- Faults of the box (``app/diskspace.py``): no run starts while the output directory's disk is nearly full
  or the directory is gone; they wait queued, with the reason in ``waiting_reason``. No thread dies: a
  store that refuses a write (a full disk) is retried with backoff until the outcome is recorded.
- Event-driven: a submission or a run's end wakes the dispatcher at once. Runs are followed by one thread
  each (``Launcher.wait``), or, for a launcher with ``batch_polling``, by one thread asking the engine
  about all of them in one query per interval.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from app.core.config import Settings
from app.diskspace import DiskGuard, size_on_disk
from app.errors import (
    EngineUnavailable,
    InsufficientStorage,
    RunConflict,
    RunNotFound,
    StoreUnavailable,
    TooManyRuns,
)
from app.fairshare import FairShare
from app.launchers.base import Launcher, LaunchSpec, Outcome
from app.models import RunRecord, RunStatus, SweepRecord
from app.runfiles import record_tail
from app.scheduling import Slots
from app.statedir import StateDir
from app.store import IdempotencyKeyTaken, NameTaken, RunStore
from app.users import LOCAL, Users
from app.validation import RunValidator
from trainer.plan import NameInUse, RunPlan, claim, trainer_args

log = logging.getLogger("labrun.lifecycle")
ENGINE_RETRY_S = 2.0  # when the engine is down, try to start queued runs again this often
DISK_RETRY_S = 2.0  # while the disk is full (or the output directory gone), look again this often
MAX_BACKOFF_S = 5.0  # the longest wait between two tries to record an outcome the store refused
NO_SPACE = ("No space left on device", "[Errno 28]", "database or disk is full")


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
    ) -> None:
        self.settings, self.store, self.launcher = settings, store, launcher
        self.validator, self.state, self.gpus = validator, state, tuple(gpus)
        self.disk = disk or DiskGuard(settings.output_dir, settings.min_free_bytes, settings.min_free_percent)
        self.waiting_reason: str | None = None  # why queued runs do not start now (the disk), if they wait
        self.ended: dict[str, Ending] = {}  # runs that ended, until the store has recorded it
        self.requeued: dict[str, int] = {}  # runs the engine requeued, waiting to run again -> next attempt
        self._cond = threading.Condition(threading.RLock())
        # A launcher that places runs itself gets no GPU ids from us, and no cap: its scheduler queues.
        self._slots = Slots(gpus, settings.max_cpu_runs, unlimited=launcher.places_runs)
        self._starting: set[str] = set()
        self._active: dict[str, str] = {}  # running run -> handle, while a watcher follows it
        self._cancelling: set[str] = set()
        self._unreconciled: set[str] = set()  # queued runs the engine could not be asked about at start-up
        self._wakeup = True
        self._retry_at = 0.0
        self._stopping = threading.Event()
        self.closing = threading.Event()  # the server is shutting down: log followers end their streams
        self._dispatcher: threading.Thread | None = None
        self._poller: threading.Thread | None = None
        self._timekeeper: threading.Thread | None = None
        self.users = Users(store)
        self.fair = FairShare(settings.fair_share_half_life_s)
        self._timed_out: dict[str, float] = {}  # runs cancelled for running past their maximum run time
        self._positions: tuple[float, dict[str, int]] = (0.0, {})
        self._order_dirty = True

    # --- start-up and shut-down ---------------------------------------------------------------------

    def reconcile(self) -> None:
        """Recover every unfinished run before accepting new work (after a restart or a kill -9)."""
        self.store.set_owner_of_unowned(self.settings.legacy_owner)
        self.fair.load(self.store.ended_since(time.time() - 20 * self.settings.fair_share_half_life_s))
        running = self.store.running()
        try:  # one question for all of them
            outcomes = self.launcher.poll_many({r.name: r.handle or "" for r in running})
        except EngineUnavailable:
            outcomes = {}  # the watchers keep asking until the engine answers
        for record in running:
            handle = record.handle or ""
            outcome = outcomes.get(record.name)
            if outcome is not None:  # it ended while the service was down
                self._recorded_later(record.name, handle, outcome)
            else:
                self._adopt(record, handle)
                if record.cancel_requested:  # a cancel the last service recorded but did not see through
                    self._resume_cancel(record.name, handle)
        for record in self.store.queued():
            self._unreconciled.add(record.name)
            try:
                self._reattach_queued(record)
            except EngineUnavailable:  # asked again before it starts or is cancelled; until then it keeps
                # the GPUs it was given before the restart: it may be running on them already
                if record.gpus and all(g in self._slots.free_gpus for g in record.gpus):
                    self._slots.hold(record.name, record.gpu_need, record.gpus)
        self._release_leftovers()

    def _release_leftovers(self) -> None:
        """Free what the engine still keeps for runs whose outcome is recorded (a container left by a
        service that died between recording a run's end and releasing it)."""
        try:
            leftovers = self.launcher.leftovers()
        except EngineUnavailable:
            return  # nothing is lost: they are found again at the next start
        for name, handle in leftovers.items():
            record = self.store.get(name)
            if record is not None and record.status.is_terminal():
                try:
                    self.launcher.release(name, handle)
                except Exception:
                    log.exception("releasing %s failed", name)

    def _reattach_queued(self, record: RunRecord) -> RunRecord:
        """A queued run the launcher already knows was started just before the service died, and never
        recorded as running: record it now and follow it. Raises EngineUnavailable."""
        handle = self.launcher.reattach(record.name)
        self._unreconciled.discard(record.name)
        if handle and self.store.mark_running(record.name, handle, record.gpus, launcher=self.launcher.name):
            record = self.get(record.name)
            self._adopt(record, handle)
        return record

    def start(self) -> None:
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="labrun-dispatcher", daemon=True)
        self._dispatcher.start()
        if self.launcher.batch_polling:
            self._poller = threading.Thread(target=self._poll_loop, name="labrun-poller", daemon=True)
            self._poller.start()
        self._timekeeper = threading.Thread(target=self._time_loop, name="labrun-timekeeper", daemon=True)
        self._timekeeper.start()

    def stop(self) -> None:
        """Stop dispatching and watching; the runs themselves carry on and are re-attached next start."""
        self.closing.set()
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for thread in (self._dispatcher, self._poller, self._timekeeper):
            if thread is not None:
                thread.join(timeout=10)

    # --- requests --------------------------------------------------------------------------------------

    def submit(
        self,
        overrides: Sequence[str],
        config_name: str | None = None,
        idempotency_key: str | None = None,
        rerun_of: str | None = None,
        owner: str = LOCAL,
    ) -> tuple[RunRecord, bool]:
        """Validate and queue ``owner``'s run; returns (run, replayed), replayed meaning an Idempotency-Key
        hit (a key is ``owner``'s own: another user's key of the same text is another key)."""
        overrides = list(overrides)
        idempotency_key = f"{owner}:{idempotency_key}" if idempotency_key else None
        if idempotency_key:
            existing = self.store.get_by_idempotency_key(idempotency_key)
            if existing is not None:
                return self._replay(existing, overrides, config_name, rerun_of), True
        plan = self.validator.plan(overrides, config_name)
        self._check_room()
        self._check_queue_limit(owner)

        def take(candidate: RunPlan) -> RunRecord:
            if (self.settings.output_dir / candidate.run_dir).exists():
                raise NameInUse(
                    candidate.run_dir
                )  # left over from an earlier store: the trainer would refuse it
            try:
                return self.store.insert(_new_record(candidate, idempotency_key, rerun_of, owner))
            except NameTaken:
                raise NameInUse(candidate.name) from None

        try:
            _, record = claim(plan, take)
        except IdempotencyKeyTaken:  # a concurrent request with the same key won
            existing = self.store.get_by_idempotency_key(idempotency_key or "")
            return self._replay(existing, overrides, config_name, rerun_of), True
        except NameInUse:  # pragma: no cover - ten thousand identical requests in one second
            raise RunConflict("could not find a free run name; try again") from None
        self._order_dirty = True
        self._wake()
        return record, False

    def _check_queue_limit(self, owner: str, adding: int = 1) -> None:
        limit = self.limits(owner)["max_queued"]
        if limit is None:
            return
        queued = self.store.count([RunStatus.QUEUED], owner=owner)
        if queued + adding > limit:
            what = f"a sweep of {adding} runs would make {queued + adding}; " if adding > 1 else ""
            raise TooManyRuns(
                f"{owner} has {queued} runs queued, {what}the most one user may have queued at once is "
                f"{limit}; submit more when some have started (or cancel some)"
            )

    def queue_together(
        self, records: list[RunRecord], owner: str, sweep: SweepRecord | None = None
    ) -> list[RunRecord]:
        """Queue ``owner``'s ``records`` (a sweep's runs) with the ``sweep``'s own row in one store
        transaction: all or none. The disk and the owner's queued limit are checked for all of them at
        once. Raises NameTaken / IdempotencyKeyTaken (nothing queued) for the caller to handle."""
        self.check_can_queue(owner, len(records))
        stored = self.store.insert_runs(records, sweep)
        self._order_dirty = True
        self._wake()
        return stored

    def check_can_queue(self, owner: str, count: int = 1) -> None:
        """Refuse what could not be queued now: no room on the disk (507/503), past the owner's limit of
        queued runs (429). A sweep asks before it plans its runs, and again when it queues them."""
        self._check_room()
        self._check_queue_limit(owner, adding=count)

    def limits(self, owner: str) -> dict[str, float | None]:
        """The user's limits: their own where an admin set one, else the server's (0 means none)."""
        user = self.users.get(owner)
        s = self.settings
        chosen = {
            "max_gpus": user.max_gpus if user and user.max_gpus is not None else s.max_gpus_per_user,
            "max_queued": user.max_queued if user and user.max_queued is not None else s.max_queued_per_user,
            "max_run_s": user.max_run_s if user and user.max_run_s is not None else s.max_run_s,
        }
        return {k: (v or None) for k, v in chosen.items()}

    def _check_room(self) -> None:
        """Refuse new work while the output directory cannot take it (507/503 naming what to do)."""
        disk = self.disk.check()
        if disk.ok:
            return
        if disk.free_bytes is None:  # gone or unwritable
            raise StoreUnavailable(f"{disk.reason}: no run can be accepted until it is back")
        raise InsufficientStorage(
            f"{disk.reason}; no run is accepted until there is room: delete finished runs "
            "(DELETE /runs/<name>) or free space on that disk. Queued runs start by themselves then."
        )

    def rerun(
        self, name: str, idempotency_key: str | None = None, owner: str = LOCAL
    ) -> tuple[RunRecord, bool]:
        """A new run of ``owner``'s with the original's overrides and seed; (run, replayed) as for ``submit``."""
        original = self.get(name)
        overrides = list(original.overrides)
        current_seed = self.validator.plan(overrides, original.config_name).seed
        if original.seed is not None and current_seed != original.seed:  # conf/ changed its default seed
            overrides.append(f"seed={original.seed}")
        return self.submit(overrides, original.config_name, idempotency_key, rerun_of=name, owner=owner)

    def cancel(self, name: str, by: str = LOCAL) -> RunRecord:
        """Cancel a run (``by``: who asked, recorded with it; may they? the API layer decides)."""
        with self._cond:
            self._cond.wait_for(lambda: name not in self._starting, timeout=60)
            record = self.get(name)
            if record.status == RunStatus.QUEUED and name in self._unreconciled:
                record = self._reattach_queued(record)  # it may be running: the engine was down at start-up
            if record.status.is_terminal():
                raise RunConflict(f"run {name!r} already finished ({record.status.value}); nothing to cancel")
            if record.status == RunStatus.QUEUED:
                self.store.finish(
                    name,
                    [RunStatus.QUEUED],
                    RunStatus.CANCELLED,
                    reason="cancelled while queued",
                    cancelled_by=by,
                )
                self._order_dirty = True
                self._unreconciled.discard(name)
                self._slots.free(name)  # held if a launch of it failed half-way
                return self.get(name)
            self._cancelling.add(name)
            self.store.request_cancel(name, by=by)
            handle = record.handle or ""
        try:
            self.launcher.cancel(name, handle, self.settings.cancel_grace_s)
        except BaseException:
            with (
                self._cond
            ):  # not cancelled after all (engine down, ...): a later natural end is not a cancel
                self._cancelling.discard(name)
                self.store.request_cancel(name, requested=False)
            raise
        with self._cond:  # the watcher records the outcome; wait for it so the answer is final
            self._cond.wait_for(lambda: name not in self._active and name not in self.ended, timeout=10)
        return self.get(name)

    def _resume_cancel(self, name: str, handle: str) -> None:
        with self._cond:
            self._cancelling.add(name)

        def carry_out() -> None:
            try:
                self.launcher.cancel(name, handle, self.settings.cancel_grace_s)
            except Exception:  # e.g. the engine is down: the next start tries again (still recorded)
                log.exception("carrying out the recorded cancel of %s failed", name)

        log.info("run %s: carrying out its recorded cancel", name)
        threading.Thread(target=carry_out, daemon=True, name=f"labrun-cancel-{name[:40]}").start()

    def resume(self, name: str) -> RunRecord:
        """A failed or cancelled run goes back to the queue and continues from its last checkpoint, in the
        same run directory and WandB run, as its next attempt (the one that ended is kept: ``attempts``)."""
        with self._cond:
            record = self.get(name)
            if record.status not in (RunStatus.FAILED, RunStatus.CANCELLED) or record.deleted_at is not None:
                state = "deleted" if record.deleted_at is not None else record.status.value
                raise RunConflict(f"run {name!r} is {state}; only a failed or cancelled run can be resumed")
            checkpoint = self.settings.output_dir / record.run_dir / "ckpt" / "last.ckpt"
            if not checkpoint.is_file():
                raise RunConflict(
                    f"run {name!r} has no checkpoint to resume from ({record.run_dir}/ckpt/last.ckpt): "
                    "rerun it instead (POST /runs/<name>/rerun starts it anew)"
                )
            self._check_room()
            self.launcher.forget(name)
            if not self.store.requeue_attempt(name):
                raise RunConflict(f"run {name!r} changed meanwhile; try again")
            self._order_dirty = True
            self._wakeup = True
            self._cond.notify_all()
        log.info("run %s resumes as attempt %d", name, record.attempts + 1)
        return self.get(name)

    def delete(self, name: str, by: str = LOCAL) -> RunRecord:
        """Remove a finished run's files (its run directory and state folder) and keep its record, marked
        deleted, so its name is never reused. Repeating it is harmless."""
        record = self.get(name)
        if not record.status.is_terminal():
            raise RunConflict(
                f"run {name!r} is {record.status.value}; only finished runs can be deleted: cancel it first"
            )
        if record.deleted_at is not None:
            return record
        run_dir = (self.settings.output_dir / record.run_dir).resolve()
        if not run_dir.is_relative_to(self.settings.output_dir) or run_dir == self.settings.output_dir:
            raise RunConflict(f"run {name!r} has no run directory of its own inside the output directory")
        for path in (run_dir, self.state.run(name)):
            shutil.rmtree(path, ignore_errors=True)  # what is already gone is fine; links are not followed
        self.store.mark_deleted(name, by)
        log.info("run %s deleted by %s", name, by)
        return self.get(name)

    def get(self, name: str) -> RunRecord:
        record = self.store.get(name)
        if record is None:
            raise RunNotFound(name)
        return record

    # --- dispatch ---------------------------------------------------------------------------------------

    def _wake(self) -> None:
        with self._cond:
            self._wakeup = True
            self._cond.notify_all()

    def _dispatch_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._cond:
                timeout = max(0.0, self._retry_at - time.monotonic()) if self._retry_at else None
                self._cond.wait_for(lambda: self._wakeup or self._stopping.is_set(), timeout=timeout)
                if self._stopping.is_set():
                    return
                self._wakeup, self._retry_at = False, 0.0
                try:
                    picks = self._pick()
                    failures = 0
                except Exception as exc:  # e.g. the store refused a write: never let the dispatcher die
                    failures += 1
                    if failures == 1:
                        log.exception("dispatching failed; retrying")
                    else:
                        log.warning("dispatching failed again: %s", exc)
                    self._retry_at = time.monotonic() + min(MAX_BACKOFF_S, 0.25 * 2**failures)
                    continue
            for record, gpus in picks:
                try:
                    self._launch(record, gpus)
                except Exception:  # a bug must not kill the dispatcher; the run stays queued
                    log.exception("launching %s failed", record.name)
                    self._launch_unknown(record.name)

    def _pick(self) -> list[tuple[RunRecord, list[int]]]:
        """Reserve resources for the runs to start now, FIFO within the CPU pool and within the GPU pool."""
        if not self._slots.any_free() and not self._unreconciled:  # (a run to retry may hold its slot)
            return []  # nothing could start: skip reading the queue (cheap wake-ups under load)
        disk = self.disk.check()
        self.waiting_reason = disk.reason
        if not disk.ok:  # runs stay queued, with the reason; looked at again shortly
            self._retry_at = time.monotonic() + DISK_RETRY_S
            return []
        gpu_blocked = False
        picks = []
        running = self.store.entries(RunStatus.RUNNING)
        in_use: dict[str, int] = {}
        for r in running:
            in_use[r.owner or ""] = in_use.get(r.owner or "", 0) + r.gpu_need
        self._order_dirty = True
        limits: dict[str, dict] = {}
        for record in self.fair.order(self.store.entries(RunStatus.QUEUED), running):
            owner_limits = limits.get(record.owner or "") or limits.setdefault(
                record.owner or "", self.limits(record.owner or "")
            )
            max_gpus = owner_limits["max_gpus"] if record.gpu_need else None
            if max_gpus is not None and in_use.get(record.owner or "", 0) + record.gpu_need > max_gpus:
                continue  # this user has their share of GPUs in use; others' runs may go first
            if record.name in self._starting or (record.gpu_need and gpu_blocked):
                continue
            if record.gpu_need > len(self.gpus) and not self.launcher.places_runs:  # the inventory shrank
                reason = (
                    f"could not start: needs {record.gpu_need} GPU(s), this server now has {len(self.gpus)}"
                )
                self.store.finish(record.name, [RunStatus.QUEUED], RunStatus.FAILED, reason=reason)
                continue
            gpus = self._slots.take(record.name, record.gpu_need)
            if gpus is None:
                gpu_blocked = gpu_blocked or record.gpu_need > 0
                continue
            if gpus:
                self.store.assign_gpus(record.name, gpus)
            full = self.store.get(record.name)
            if full is None or full.status != RunStatus.QUEUED:  # cancelled meanwhile
                self._slots.free(record.name)
                continue
            in_use[record.owner or ""] = in_use.get(record.owner or "", 0) + record.gpu_need
            self._starting.add(record.name)
            picks.append((full, gpus))
        return picks

    def _launch(self, record: RunRecord, gpus: list[int]) -> None:
        name = record.name
        try:
            handle = self.launcher.reattach(name) if name in self._unreconciled else None
            if handle is None:
                handle = self.launcher.start(self._spec(record, gpus))
        except EngineUnavailable as exc:
            log.warning("engine unavailable, %s stays queued: %s", name, exc)
            if name in self._unreconciled:  # it may be running already: it keeps what it holds
                self._launch_unknown(name)
            else:
                self._release_slot(name, retry=True)
            return
        except Exception as exc:
            self._release_slot(name, fail_reason=f"could not start: {exc}")
            return
        with self._cond:
            self._starting.discard(name)
            self._unreconciled.discard(name)
            recorded = self.store.mark_running(name, handle, gpus, launcher=self.launcher.name)
            self._cond.notify_all()
        if not recorded:  # cannot happen (a cancel waits while a run is starting); never leave it orphaned
            log.error("%s started but was no longer queued; stopping it", name)
            self._release_slot(name)
            self.launcher.cancel(name, handle, self.settings.cancel_grace_s)
            return
        log.info("run %s started (%s, handle %s)", name, f"GPUs {gpus}" if gpus else "CPU", handle)
        self._adopt(record, handle, gpus)

    def _launch_unknown(self, name: str) -> None:
        """A launch failed where the run may have started anyway (e.g. the store refused queued -> running):
        it keeps its GPUs or CPU slot (the next pick takes the same ones) and the launcher is asked for it
        by name before it is started again, so it never runs twice and its GPUs never go to another run."""
        with self._cond:
            self._starting.discard(name)
            self._unreconciled.add(name)
            self._retry_at = time.monotonic() + ENGINE_RETRY_S
            self._cond.notify_all()

    def _release_slot(self, name: str, retry: bool = False, fail_reason: str | None = None) -> None:
        with self._cond:
            self._starting.discard(name)
            self._slots.free(name)
            if fail_reason:
                self.store.finish(
                    name,
                    [RunStatus.QUEUED],
                    RunStatus.FAILED,
                    reason=fail_reason,
                    log_tail=self._log_tail(name),
                )
                self._wakeup = True
            if retry:
                self._retry_at = time.monotonic() + ENGINE_RETRY_S
            self._cond.notify_all()

    def _spec(self, record: RunRecord, gpus: list[int]) -> LaunchSpec:
        return LaunchSpec(
            name=record.name,
            trainer_args=trainer_args(
                record.name,
                record.overrides,
                record.config_name,
                self.settings.output_dir,
                wandb_entity=self.settings.wandb_entity,
                run_dir=record.run_dir if record.sweep else None,  # filed in its sweep's folder
            ),
            gpus=tuple(gpus),
            output_dir=self.settings.output_dir,
            state_dir=self.state.run(record.name),
            log_path=self.state.log(record.name),
            env={
                "PYTHONUNBUFFERED": "1",
                "LABRUN_RUN_OWNER": record.owner or "",
                **({"LABRUN_SWEEP": record.sweep} if record.sweep else {}),  # its WandB group
                # a resumed run: the trainer continues from ckpt/last.ckpt in its own directory
                **(
                    {"LABRUN_RESUME": "1", "LABRUN_ATTEMPT": str(record.attempts)}
                    if record.attempts > 1
                    else {}
                ),
            },
            gpu_need=record.gpu_need,
        )

    # --- watching ---------------------------------------------------------------------------------------

    def _adopt(self, record: RunRecord, handle: str, gpus: Sequence[int] | None = None) -> None:
        """Account for a running run's resources and follow it until it ends."""
        gpus = list(record.gpus if gpus is None else gpus)
        with self._cond:
            self._slots.hold(record.name, record.gpu_need, gpus)
            self._active[record.name] = handle
        if self.launcher.batch_polling:
            return  # the poller follows it
        threading.Thread(
            target=self._watch,
            args=(record.name, handle),
            daemon=True,
            name=f"labrun-watch-{record.name[:40]}",
        ).start()

    def _watch(self, name: str, handle: str) -> None:
        while not self._stopping.is_set():
            try:
                outcome = self.launcher.wait(name, handle, timeout=5)
            except EngineUnavailable:
                self._stopping.wait(ENGINE_RETRY_S)
                continue
            except Exception:
                log.exception("watching %s failed; retrying", name)
                self._stopping.wait(ENGINE_RETRY_S)
                continue
            if self._stopping.is_set():  # shutting down: the next start re-attaches and records it
                return
            if outcome is not None:
                self._record(name, handle, outcome)
                return

    def _poll_loop(self) -> None:
        """One query for every running run per interval (``batch_polling`` launchers)."""
        while not self._stopping.wait(self.launcher.poll_interval_s):
            with self._cond:
                active = dict(self._active)
            if not active:
                continue
            try:
                outcomes = self.launcher.poll_many(active)
            except EngineUnavailable:
                continue
            except Exception:
                log.exception("polling %d run(s) failed; retrying", len(active))
                continue
            for name, outcome in outcomes.items():
                if outcome is not None and not self._stopping.is_set():
                    self._record(name, active[name], outcome)
                elif outcome is None:
                    self._note_requeue(name)

    def _note_requeue(self, name: str) -> None:
        """A run the engine requeued (a preemption) stays one run: its attempt count goes up, and while it
        waits to run again the API says so (``requeued``)."""
        try:
            started, waiting = self.launcher.attempts(name)
            if waiting:
                self.requeued[name] = started + 1
            else:
                self.requeued.pop(name, None)
            if started > 1:
                self.store.set_attempts(name, started)
        except Exception as exc:  # a figure for the API: never a reason to stop polling
            log.warning("reading the attempts of %s failed: %s", name, exc)

    def _recorded_later(self, name: str, handle: str, outcome: Outcome) -> None:
        """At start-up: record now, or (the store refuses) keep trying in the background, not blocking."""
        try:
            self._finish(name, handle, outcome)
        except Exception:
            threading.Thread(target=self._record, args=(name, handle, outcome), daemon=True).start()

    def _record(self, name: str, handle: str, outcome: Outcome) -> None:
        """``_finish``, retried with backoff until the store takes it (a full disk refuses writes): the run's
        process has ended, so its slot must come back as soon as the outcome can be written."""
        for attempt in range(1, 1_000_000):
            try:
                self._finish(name, handle, outcome)
                return
            except Exception as exc:
                if attempt == 1:
                    log.exception("recording the end of %s failed; retrying until the store takes it", name)
                else:
                    log.warning("recording the end of %s failed again: %s", name, exc)
                if self._stopping.wait(min(MAX_BACKOFF_S, 0.1 * 2**attempt)):
                    return  # the next start finds the outcome again (the launcher keeps it)

    def _finish(self, name: str, handle: str, outcome: Outcome) -> None:
        """Decide how the run ended, hand its resources on, record it. Raises when the store refuses the
        write (``_record`` retries); meanwhile the decision is in ``self.ended``, which the API shows, so a
        run whose process ended never reads as running for long."""
        with self._cond:
            ending = self.ended.get(name) or self._decide(name, outcome)
            self.ended[name] = ending
            self._slots.free(name)  # the process is gone: its GPUs are free, recorded or not
            self._active.pop(name, None)
            self._wakeup = True
            self._cond.notify_all()
        self.store.finish(
            name, [RunStatus.RUNNING], ending.status, ending.exit_code, ending.reason, ending.log_tail
        )
        with self._cond:
            self.ended.pop(name, None)
            self._cancelling.discard(name)
            self._timed_out.pop(name, None)
            self.requeued.pop(name, None)
            self._order_dirty = True
            self._cond.notify_all()
        recorded = self.store.get(name)
        if recorded is not None:
            self.fair.add(recorded)  # its use counts against its owner from now on
        log.info("run %s %s%s", name, ending.status.value, f": {ending.reason}" if ending.reason else "")
        try:
            self.launcher.release(name, handle)  # only now: the outcome is recorded
        except Exception:
            log.exception("releasing %s failed", name)
        self._measure(name)

    def queue_positions(self) -> dict[str, int]:
        """Each queued run's place in its pool, in the order the dispatcher will take them (fair share,
        given what is known now); recomputed at most once a second."""
        at, positions = self._positions
        if self._order_dirty or time.monotonic() - at > 1.0:
            self._order_dirty = False
            try:
                order = self.fair.order(
                    self.store.entries(RunStatus.QUEUED), self.store.entries(RunStatus.RUNNING)
                )
            except Exception as exc:  # a read must answer: the last order known is close enough
                log.warning("computing queue positions failed: %s", exc)
                return positions
            counters: dict[bool, int] = {}
            positions = {}
            for r in order:
                counters[bool(r.gpu_need)] = counters.get(bool(r.gpu_need), 0) + 1
                positions[r.name] = counters[bool(r.gpu_need)]
            self._positions = (time.monotonic(), positions)
        return positions

    def _time_loop(self) -> None:
        """Cancel runs that pass their owner's maximum run time."""
        while not self._stopping.wait(1.0):
            try:
                now = time.time()
                for record in self.store.running():
                    limit = self.limits(record.owner or "")["max_run_s"]
                    if limit is None or record.started_at is None or now - record.started_at < limit:
                        continue
                    with self._cond:
                        if record.name in self._timed_out or record.name not in self._active:
                            continue
                        self._timed_out[record.name] = limit
                    log.info("run %s ran past its maximum run time (%g s): cancelling it", record.name, limit)
                    self._resume_cancel(record.name, record.handle or "")
            except Exception:
                log.exception("checking run times failed")

    def _decide(self, name: str, outcome: Outcome) -> Ending:
        log_tail = self._log_tail(name)
        record = self.store.get(name)
        # A run the user cancelled ends cancelled, even when its trainer caught SIGTERM and exited 0.
        if name in self._timed_out:
            status = RunStatus.CANCELLED
            reason = f"cancelled: it ran past its maximum run time of {self._timed_out[name]:g} s"
        elif name in self._cancelling or (record is not None and record.cancel_requested):
            how = outcome.reason or f"exited with code {outcome.exit_code} after SIGTERM"
            status, reason = RunStatus.CANCELLED, f"cancelled by request ({how})"
        elif outcome.succeeded:
            status, reason, log_tail = RunStatus.SUCCEEDED, None, None
        else:
            status, reason = RunStatus.FAILED, outcome.reason or "ended without an exit status"
            if _ran_out_of_space(log_tail) or not self.disk.check().ok:
                reason = f"no space left on device ({reason})"
        return Ending(status, outcome.exit_code, reason, log_tail, time.time())

    def _measure(self, name: str) -> None:
        """Note what an ended run's files take (best effort: a store that refuses it loses only a figure)."""
        record = self.store.get(name)
        if record is None:
            return
        try:
            size = size_on_disk(self.settings.output_dir / record.run_dir, self.state.run(name))
            self.store.set_disk_bytes(name, size)
        except Exception as exc:
            log.warning("measuring the disk usage of %s failed: %s", name, exc)

    def _log_tail(self, name: str) -> str | None:
        return record_tail(self.state.log(name), self.settings.log_tail_lines, self.settings.log_tail_bytes)

    def _replay(
        self, existing: RunRecord | None, overrides: list[str], config_name: str | None, rerun_of: str | None
    ) -> RunRecord:
        """The run a key was first used for, if this request is the same one (a key is bound to what it was
        first used for: the same overrides, config and, for a rerun, the same original run)."""
        same = (
            existing is not None
            and existing.overrides == overrides
            and existing.config_name == (config_name or existing.config_name)
            and existing.rerun_of == rerun_of
        )
        if not same:
            raise RunConflict("this Idempotency-Key was already used for a different request; use a new key")
        return existing


@dataclass(frozen=True)
class Ending:
    """How a run ended, as it will be recorded."""

    status: RunStatus
    exit_code: int | None
    reason: str | None
    log_tail: str | None
    finished_at: float


def _new_record(plan: RunPlan, idempotency_key: str | None, rerun_of: str | None, owner: str) -> RunRecord:
    return RunRecord(
        seq=0,
        name=plan.name,
        status=RunStatus.QUEUED,
        config_name=plan.config_name,
        overrides=plan.overrides,
        run_dir=plan.run_dir,
        gpu_need=plan.gpu_need,
        resources=plan.resources,
        created_at=time.time(),
        seed=plan.seed,
        rerun_of=rerun_of,
        idempotency_key=idempotency_key,
        owner=owner,
    )


def _ran_out_of_space(log_tail: str | None) -> bool:
    return bool(log_tail) and any(marker in log_tail for marker in NO_SPACE)
