"""Dispatch: starting queued runs. A policy picks (``picking.py``); this room does the side effects.

Event-driven: a submission or a run's end wakes the dispatcher at once (``LiveState.wake``); it also looks
again by itself at ``retry_at`` (the engine was down, the disk full). One round, under the lock: the policy
picks, and each pick's GPUs are noted in the store and the run marked "starting" (a cancel waits for it).
Then, outside the lock, the launcher starts each run and queued -> running is recorded with its handle.
No run starts while the output directory's disk is nearly full or gone: they wait queued, with the reason
in ``waiting_reason``. A launcher that places runs itself (a cluster) gets every queued run at once.
Preemptions the policy decides are begun here too, by ``preemption.py``; the runs being preempted are
remembered in the live state (and the store) from round to round, so they are not chosen twice.
Reservations (``reservations.py``) are kept first in each round; the dispatcher wakes at their boundaries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path

from app.budgets import Budgets, runs_as
from app.errors import EngineUnavailable
from app.launchers.base import LaunchSpec
from app.lifecycle.live import DISK_RETRY_S, ENGINE_RETRY_S, MAX_BACKOFF_S, Context
from app.lifecycle.picking import PickingPolicy, Picks, Round, Start
from app.lifecycle.preemption import Preempter
from app.lifecycle.reservations import ReservationRoom
from app.lifecycle.supervision import Supervisor
from app.lifecycle.timelimits import remaining
from app.models import Priority, RunRecord, RunStatus
from app.store import QueueEntry
from trainer.plan import trainer_args
from trainer.runenv import RunEnv

log = logging.getLogger("labrun.lifecycle")


class Dispatcher:
    def __init__(
        self,
        ctx: Context,
        policy: PickingPolicy,
        supervisor: Supervisor,
        gpus: int | None,
        preempter: Preempter | None = None,
        reservations: ReservationRoom | None = None,
    ) -> None:
        """``gpus``: how many this server has (None: the engine places runs itself). ``preempter``: None, no
        run is ever preempted. ``reservations``: None, no GPU is ever reserved."""
        self.ctx, self.policy, self.supervisor, self.gpus = ctx, policy, supervisor, gpus
        self.preempter, self.reservations = preempter, reservations
        self.store, self.launcher, self.live = ctx.store, ctx.launcher, ctx.live
        self._positions: tuple[float, dict[str, int]] = (0.0, {})
        # (Under the lock.) Queued runs left out of every round: they wait for others (dependencies.py).
        self.held: Callable[[], AbstractSet[str]] = frozenset
        # A run's LABRUN_INIT_FROM_CKPT: the checkpoint it starts from (dependencies.py), or None
        self.init_checkpoint: Callable[[RunRecord], Path | None] = lambda _record: None
        self.budgets: Budgets | None = None  # GPU-hour budgets (app/budgets.py); None: none

    def loop(self) -> None:
        failures = 0
        live = self.live
        while not live.stopping.is_set():
            with live.cond:
                timeout = max(0.0, live.retry_at - time.monotonic()) if live.retry_at else None
                live.cond.wait_for(lambda: live.wakeup or live.stopping.is_set(), timeout=timeout)
                if live.stopping.is_set():
                    return
                live.wakeup, live.retry_at = False, 0.0
                try:
                    picks = self.pick()
                    failures = 0
                except Exception as exc:  # e.g. the store refused a write: never let the dispatcher die
                    failures += 1
                    if failures == 1:
                        log.exception("dispatching failed; retrying")
                    else:
                        log.warning("dispatching failed again: %s", exc)
                    live.retry_at = time.monotonic() + min(MAX_BACKOFF_S, 0.25 * 2**failures)
                    continue
            self.launch_all(picks)

    def run_once(self) -> list[str]:
        """One round, as the loop does it (for tests): the names of the runs it started."""
        with self.live.cond:
            self.live.wakeup = False
            picks = self.pick()
        self.launch_all(picks)
        return [record.name for record, _ in picks]

    def launch_all(self, picks: list[tuple[RunRecord, list[int]]]) -> None:
        for record, gpus in picks:
            try:
                self._launch(record, gpus)
            except Exception:  # a bug must not kill the dispatcher; the run stays queued
                log.exception("launching %s failed", record.name)
                self._launch_unknown(record.name)

    def pick(self) -> list[tuple[RunRecord, list[int]]]:
        """(Under the lock.) Reserve resources for the runs to start now, as the policy picks them."""
        live = self.live
        if self.reservations is not None:  # first: a window's clearing preempts whatever else can start
            self.reservations.enforce()
            self._wake_at(self.reservations.wake_at)
        full = not live.slots.any_free() and not live.unreconciled  # (a run to retry may hold its slot)
        if full and not self._may_preempt():
            live.gpu_waiting = {}  # labrun's own runs hold every GPU: no run waits for one busy outside
            live.preempt_waiting = {}
            return []  # nothing could start: skip reading the queue (cheap wake-ups under load)
        disk = self.ctx.disk.check()
        live.waiting_reason = disk.reason
        if not disk.ok:  # runs stay queued, with the reason; looked at again shortly
            live.retry_at = time.monotonic() + DISK_RETRY_S
            return []
        live.order_dirty = True
        picks = self.policy.pick(self._round())
        guard = self.ctx.guard.view() if self.ctx.guard is not None else None  # the last pass, cached
        reason = guard.reason() if guard is not None and picks.outside else None
        live.gpu_waiting = dict.fromkeys(picks.outside, reason) if reason else {}
        self._preempt(picks)
        for refusal in picks.refuse:
            self.store.finish(refusal.entry.name, [RunStatus.QUEUED], RunStatus.FAILED, reason=refusal.reason)
        return [taken for start in picks.start if (taken := self._take(start)) is not None]

    def _round(self) -> Round:
        """(Under the lock.) What the policy is told: the queue, the free resources, the limits."""
        limits: dict[str, tuple[int | None, int | None]] = {}

        def limit(owner: str) -> tuple[int | None, int | None]:
            if owner not in limits:
                of = self.ctx.limits.of(owner)
                limits[owner] = (of.max_gpus, of.high_gpus)
            return limits[owner]

        live = self.live
        queued, running = self.store.entries(RunStatus.QUEUED), self.store.entries(RunStatus.RUNNING)
        held = self.held()
        if held:
            queued = [e for e in queued if e.name not in held]
        queued, running = self._budgeted(queued, running)
        guard = self.ctx.guard.view() if self.ctx.guard is not None else None  # the last pass, cached
        outside = frozenset(guard.busy) if guard is not None else frozenset()
        preempter = self.preempter
        preemptible = preempter.preemptible() if preempter else frozenset()
        candidates = preempter.candidates if preempter else list
        reservations = self.reservations
        return Round(
            queued,
            running,
            live.slots.copy(),
            frozenset(live.starting),
            lambda owner: limit(owner)[0],
            self.gpus,
            outside,
            high_cap=lambda owner: limit(owner)[1],
            preemptible=preemptible,
            stopping={v: w for v, w in live.preempting.items() if v in live.active},
            candidates=reservations.candidates(candidates) if reservations else candidates,
            reservations=reservations.rules(preemptible) if reservations else None,
        )

    def _budgeted(
        self, queued: list[QueueEntry], running: list[QueueEntry]
    ) -> tuple[list[QueueEntry], list[QueueEntry]]:
        """(Under the lock.) The queue as the policy sees it with budgets: a queued run of a user over budget
        as low; a running run started as low for that reason still low (app/budgets.py)."""
        live, budgets = self.live, self.budgets
        if budgets is None or not (live.budget_low or budgets.enabled()):
            return queued, running  # no budget anywhere: the queue as it is (5,000 entries: ~2 ms less)
        low = live.budget_low
        if low:  # forget the runs that ended (a queued one is decided again when it is taken)
            live.budget_low = low & {e.name for e in (*queued, *running)}
        over = budgets.over()
        lowered = Priority.LOW.value
        return (
            [runs_as(e, over) for e in queued],
            [e._replace(priority=lowered) if e.name in live.budget_low else e for e in running],
        )

    def _may_preempt(self) -> bool:
        """(Under the lock.) Whether a round could preempt anything: a run of a preemptible class runs."""
        if self.preempter is None:
            return False
        classes = self.preempter.preemptible()
        low = self.live.budget_low if Priority.LOW.value in classes else set()
        return any(r.priority in classes or r.name in low for r in self.store.entries(RunStatus.RUNNING))

    def _preempt(self, picks: Picks) -> None:
        """(Under the lock.) Begin the preemptions the policy chose; say why the runs they are for wait."""
        live = self.live
        if self.preempter is not None:
            for preemption in picks.preempt:
                self.preempter.begin(preemption)
            recheck = self.preempter.recheck_at
            if recheck is not None:  # a run waits for one that may be preempted a little later
                self.preempter.recheck_at = None
                at = time.monotonic() + max(0.0, recheck - time.time()) + 0.05
                live.retry_at = min(live.retry_at, at) if live.retry_at else at
        live.preempt_waiting = {
            waiter: f"preempting run{'s' if len(victims) > 1 else ''} {', '.join(victims)}: saving a checkpoint"
            for waiter, victims in picks.waiting_for.items()
        }
        why = self.reservations.waiting if self.reservations is not None else None
        if why:  # why a reservation's runs wait (over the GPU guard's plainer reason)
            live.preempt_waiting = {**live.preempt_waiting, **why}
            live.gpu_waiting = {**live.gpu_waiting, **{n: r for n, r in why.items() if n in live.gpu_waiting}}

    def _wake_at(self, at: float | None) -> None:
        """(Under the lock.) Look again by itself at the wall-clock time ``at`` (a window's boundary)."""
        if at is None or self.reservations is None:
            return
        due = time.monotonic() + max(0.0, at - self.reservations.clock()) + 0.05
        self.live.retry_at = min(self.live.retry_at, due) if self.live.retry_at else due

    def _take(self, start: Start) -> tuple[RunRecord, list[int]] | None:
        """(Under the lock.) Hold what the policy gave a run, note its GPUs, mark it starting."""
        name, gpus = start.entry.name, list(start.gpus)
        self.live.slots.hold(name, start.entry.gpu_need, gpus)
        if gpus:
            self.store.assign_gpus(name, gpus)
        record = self.store.get(name)
        if record is None or record.status != RunStatus.QUEUED:  # cancelled meanwhile
            self.live.slots.free(name)
            return None
        self.live.starting.add(name)
        if start.entry.priority != record.priority:  # it starts as low: its owner is over budget
            self.live.budget_low.add(name)
        else:
            self.live.budget_low.discard(name)
        return record, gpus

    def _launch(self, record: RunRecord, gpus: list[int]) -> None:
        name = record.name
        if gpus and self.ctx.guard is not None and name not in self.live.unreconciled:
            busy = self.ctx.guard.recheck(gpus)  # one fresh NVML pass: a process may have come since the pick
            if busy:
                self._wait_outside(name, busy)
                return
        try:
            handle = self.launcher.reattach(name) if name in self.live.unreconciled else None
            if handle is None:
                handle = self.launcher.start(self.spec(record, gpus))
        except EngineUnavailable as exc:
            log.warning("engine unavailable, %s stays queued: %s", name, exc)
            if name in self.live.unreconciled:  # it may be running already: it keeps what it holds
                self._launch_unknown(name)
            else:
                self._release_slot(name, retry=True)
            return
        except Exception as exc:
            self._release_slot(name, fail_reason=f"could not start: {exc}")
            return
        with self.live.cond:
            self.live.starting.discard(name)
            self.live.unreconciled.discard(name)
            recorded = self.store.mark_running(name, handle, gpus, launcher=self.launcher.name)
            # Only now has the queue changed in the store: marked stale before this write (at the pick),
            # an order computed in between would still count the run as queued, and be kept for a second.
            self.live.order_dirty = True
            self.live.cond.notify_all()
        if not recorded:  # cannot happen (a cancel waits while a run is starting); never leave it orphaned
            log.error("%s started but was no longer queued; stopping it", name)
            self._release_slot(name)
            self.launcher.cancel(name, handle, self.ctx.settings.cancel_grace_s)
            return
        log.info("run %s started (%s, handle %s)", name, f"GPUs {gpus}" if gpus else "CPU", handle)
        self.supervisor.adopt(record, handle, gpus)

    def _launch_unknown(self, name: str) -> None:
        """A launch failed where the run may have started anyway (e.g. the store refused queued -> running):
        it keeps its GPUs or CPU slot (the next pick takes the same ones) and the launcher is asked for it
        by name before it is started again, so it never runs twice and its GPUs never go to another run."""
        with self.live.cond:
            self.live.starting.discard(name)
            self.live.unreconciled.add(name)
            self.live.retry_at = time.monotonic() + ENGINE_RETRY_S
            self.live.cond.notify_all()

    def _wait_outside(self, name: str, reason: str) -> None:
        """A process outside labrun took one of the run's GPUs between the pick and the start: the run goes
        back to waiting, as it was (its next pick, on the fresh pass, avoids the GPU or waits for it)."""
        log.info("%s waits again, not started: %s", name, reason)
        live = self.live
        with live.cond:
            live.starting.discard(name)
            live.slots.free(name)
            live.gpu_waiting = {**live.gpu_waiting, name: reason}
            try:
                self.store.assign_gpus(name, [])  # not on those GPUs after all (the next pick notes its own)
            except Exception as exc:  # only what it shows; the next pick writes it again
                log.warning("could not clear the GPUs noted for %s: %s", name, exc)
            live.wakeup = True
            live.cond.notify_all()

    def _release_slot(self, name: str, retry: bool = False, fail_reason: str | None = None) -> None:
        live = self.live
        with live.cond:
            live.starting.discard(name)
            live.slots.free(name)
            if fail_reason:
                tail = self.supervisor.log_tail(name)
                self.store.finish(
                    name, [RunStatus.QUEUED], RunStatus.FAILED, reason=fail_reason, log_tail=tail
                )
                live.wakeup = True
            if retry:
                live.retry_at = time.monotonic() + ENGINE_RETRY_S
            live.cond.notify_all()

    def spec(self, record: RunRecord, gpus: list[int]) -> LaunchSpec:
        """What the launcher is asked to start for ``record`` on ``gpus``."""
        settings, state = self.ctx.settings, self.ctx.state
        resumed = record.attempts > 1  # the trainer continues from ckpt/last.ckpt in its own directory
        # A run that may be preempted takes a SIGTERM without the cancel marker as a preemption: it saves
        # its checkpoint and exits (trainer/resume.py). (Docker: the marker is not visible inside, so any
        # SIGTERM saves one; a cancel is still recorded as a cancel.)
        preemptible = self.preempter is not None and (
            record.priority in self.preempter.preemptible()
            or (record.name in self.live.budget_low and Priority.LOW.value in self.preempter.preemptible())
        )
        # A run with a time limit saves a checkpoint when it reaches it (timekeeper.py): the same signal.
        preemptible = preemptible or record.time_limit_s is not None
        return LaunchSpec(
            name=record.name,
            trainer_args=trainer_args(
                record.name,
                [
                    *(record.default_overrides or []),
                    *record.overrides,
                ],  # the server's first (app/defaults.py)
                record.config_name,
                settings.output_dir,
                wandb_entity=settings.wandb_entity,
                run_dir=record.run_dir if record.sweep else None,  # filed in its sweep's folder
            ),
            gpus=tuple(gpus),
            output_dir=settings.output_dir,
            state_dir=state.run(record.name),
            log_path=state.log(record.name),
            env={
                "PYTHONUNBUFFERED": "1",
                # the run's side of the contract (trainer/runenv.py): its owner, its sweep (its WandB
                # group) and, resumed, the attempt it is
                **RunEnv(
                    owner=record.owner,
                    sweep=record.sweep,
                    resume=resumed,
                    attempt=record.attempts if resumed else None,
                    max_log_bytes=settings.max_log_bytes,  # for its log's writer (0: no bound)
                    preemptible=preemptible,
                    cancel_marker=self.launcher.files(record.name).cancel_marker if preemptible else None,
                    init_from_ckpt=self.init_checkpoint(record),
                ).to_env(),
            },
            gpu_need=record.gpu_need,
            run_dir=settings.output_dir / record.run_dir,
            priority=str(record.priority),
            time_limit_s=remaining(record, time.time()),
        )

    def queue_positions(self) -> dict[str, int]:
        """Each queued run's place in its pool, in the order the dispatcher will take them (given what is
        known now); recomputed at most once a second, or when the queue changed."""
        at, positions = self._positions
        if self.live.order_dirty or time.monotonic() - at > 1.0:
            self.live.order_dirty = False
            try:
                held = self.live.after_waiting  # runs that wait for others have no place in it yet
                queued = [e for e in self.store.entries(RunStatus.QUEUED) if e.name not in held]
                if self.budgets is not None and self.budgets.enabled():  # over budget: its place as low
                    over = self.budgets.over()
                    queued = [runs_as(e, over) for e in queued]
                order = self.policy.order(queued, self.store.entries(RunStatus.RUNNING))
                rules = self.reservations.rules(frozenset()) if self.reservations is not None else None
                if rules is not None:  # a reservation's runs first, as the picking takes them
                    order.sort(key=lambda entry: not rules.first(entry))
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
