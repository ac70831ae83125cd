"""Admission: what enters the queue (submit, rerun, resume, a sweep's runs together), and the checks that
refuse it (the disk has no room, the owner's limit of queued runs); deleting a finished run's files."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from app.errors import Forbidden, InsufficientStorage, InvalidRun, RunConflict, StoreUnavailable, TooManyRuns
from app.lifecycle import dependencies
from app.lifecycle.claims import KeyReused, first_free, new_record, scoped_key
from app.lifecycle.live import Context
from app.lifecycle.stalls import check_stall_limit
from app.lifecycle.timelimits import limit_for
from app.models import Priority, RunRecord, RunStatus, SweepRecord
from app.store import IdempotencyKeyTaken, NameTaken
from app.users import LOCAL
from app.validation import RunValidator
from trainer.plan import MAX_RENAMES, NameInUse, RunPlan

log = logging.getLogger("labrun.lifecycle")


class Admission:
    def __init__(self, ctx: Context, validator: RunValidator) -> None:
        self.ctx, self.validator = ctx, validator
        self.store, self.settings, self.live = ctx.store, ctx.settings, ctx.live

    def submit(
        self,
        overrides: Sequence[str],
        config_name: str | None,
        idempotency_key: str | None,
        rerun_of: str | None,
        owner: str,
        defaults: Sequence[str] | None = None,
        stall_after_s: float | None = None,
        priority: Priority = Priority.NORMAL,
        time_limit_s: float | None = None,
        after: Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[RunRecord, bool]:
        """Validate and queue ``owner``'s run; returns (run, replayed), replayed meaning an Idempotency-Key
        hit (a key is ``owner``'s own: another user's key of the same text is another key). ``defaults``:
        the default overrides it gets (None: the server's, app/defaults.py); ``stall_after_s``: its own
        stall limit (app/lifecycle/stalls.py); ``time_limit_s``: the time limit it asks for (timelimits.py);
        ``after``: what it waits for (dependencies.py)."""
        overrides = list(overrides)
        key = scoped_key(owner, idempotency_key)
        if key and (existing := self.store.get_by_idempotency_key(key)) is not None:
            return _replay(existing, overrides, config_name, rerun_of), True
        check_stall_limit(stall_after_s, self.settings)
        limit = self.time_limit(owner, time_limit_s)
        deps = dependencies.parse(after)
        dependencies.check_named(self.store, deps)
        plan = self.validator.plan(overrides, config_name, defaults)
        dependencies.check_init_from(self.store, self.settings.output_dir, plan.job.get("init_from"), deps)
        self.check_priority(owner, priority, plan.gpu_need)
        self.check_can_queue(owner)
        waits = [d.as_dict() for d in deps] or None
        try:
            record = self._claim(plan, key, rerun_of, owner, stall_after_s, priority, limit, waits)
        except IdempotencyKeyTaken:  # a concurrent request with the same key won
            return _replay(
                self.store.get_by_idempotency_key(key or ""), overrides, config_name, rerun_of
            ), True
        self.live.wake()
        return record, False

    def _claim(
        self,
        plan: RunPlan,
        key: str | None,
        rerun_of: str | None,
        owner: str,
        stall_after_s: float | None,
        priority: Priority,
        time_limit_s: float | None = None,
        after: list[dict[str, str]] | None = None,
    ) -> RunRecord:
        """Store the plan's run under its name, or the next free one (a name the caller chose: only it)."""

        def take(attempt: int) -> RunRecord:
            candidate = plan if attempt == 1 else plan.renamed(attempt)
            if (self.settings.output_dir / candidate.run_dir).exists():
                raise NameInUse(
                    candidate.run_dir
                )  # left over from an earlier store: the trainer would refuse it
            try:
                record = new_record(
                    candidate,
                    owner,
                    idempotency_key=key,
                    rerun_of=rerun_of,
                    stall_after_s=stall_after_s,
                    priority=priority,
                    time_limit_s=time_limit_s,
                    after=after,
                )
                return self.store.insert(record)
            except NameTaken:
                raise NameInUse(candidate.name) from None

        return first_free(take, "a free run name", attempts=1 if plan.named_by_caller else MAX_RENAMES)

    def rerun(
        self, name: str, idempotency_key: str | None = None, owner: str = LOCAL
    ) -> tuple[RunRecord, bool]:
        """A new run of ``owner``'s with the original's overrides and seed; (run, replayed) as for ``submit``.
        It gets the default overrides the original got, not the server's current ones: a rerun is exact."""
        original = self.ctx.get(name)
        overrides = list(original.overrides)
        defaults = list(original.default_overrides or [])
        current_seed = self.validator.plan(overrides, original.config_name, defaults).seed
        if original.seed is not None and current_seed != original.seed:  # conf/ changed its default seed
            overrides.append(f"seed={original.seed}")
        return self.submit(
            overrides,
            original.config_name,
            idempotency_key,
            rerun_of=name,
            owner=owner,
            defaults=defaults,
            stall_after_s=original.stall_after_s,
            priority=original.priority,
            time_limit_s=self.asked_again(original, owner),
        )

    def time_limit(self, owner: str, asked: float | None) -> float | None:
        """The time limit a run of ``owner``'s gets when it asks for ``asked`` (422 over their maximum)."""
        return limit_for(
            asked, self.ctx.limits.of(owner).max_run_s, self.settings.default_time_limit_s, owner
        )

    def asked_again(self, original: RunRecord, owner: str) -> float | None:
        """A rerun asks for its original's limit, up to its new owner's maximum now (an admin may have
        lowered it: the rerun is not refused for that)."""
        if original.time_limit_s is None:
            return None
        maximum = self.ctx.limits.of(owner).max_run_s
        return min(original.time_limit_s, maximum) if maximum is not None else original.time_limit_s

    def queue_together(
        self, records: list[RunRecord], owner: str, sweep: SweepRecord | None = None
    ) -> list[RunRecord]:
        """Queue ``owner``'s ``records`` (a sweep's runs) with the ``sweep``'s own row in one store
        transaction: all or none. The disk and the owner's queued limit are checked for all of them at
        once. Raises NameTaken / IdempotencyKeyTaken (nothing queued) for the caller to handle."""
        for record in records:
            self.check_priority(owner, record.priority, record.gpu_need)
        deps = dependencies.of_record(records[0].after if records else None)  # a sweep's runs share it
        for source in sorted({r.init_from for r in records if r.init_from}):
            dependencies.check_init_from(self.store, self.settings.output_dir, source, deps)
        self.check_can_queue(owner, len(records))
        stored = self.store.insert_runs(records, sweep)
        self.live.wake()
        return stored

    def check_can_queue(self, owner: str, count: int = 1) -> None:
        """Refuse what could not be queued now: no room on the disk (507/503), past the owner's limit of
        queued runs (429). A sweep asks before it plans its runs, and again when it queues them."""
        self.check_room()
        limit = self.ctx.limits.of(owner).max_queued
        if limit is None:
            return
        queued = self.store.count([RunStatus.QUEUED], owner=owner)
        if queued + count > limit:
            what = f"a sweep of {count} runs would make {queued + count}; " if count > 1 else ""
            raise TooManyRuns(
                f"{owner} has {queued} runs queued, {what}the most one user may have queued at once is "
                f"{limit}; submit more when some have started (or cancel some)"
            )

    def check_priority(self, owner: str, priority: Priority, gpu_need: int) -> None:
        """Refuse a high-priority run its owner may not submit: 403 without an allowance, 422 for a run
        bigger than it (docs/priorities.md). low and normal are open to everyone."""
        if priority != Priority.HIGH:
            return
        allowance = self.ctx.limits.of(owner).high_gpus
        how = (
            f"an admin grants an allowance with `python -m app users limits {owner} --high-gpus N` "
            "(or PUT /users/<name>/limits with high_gpus; LABRUN_HIGH_PRIORITY_GPUS for everyone)"
        )
        if allowance == 0:
            raise Forbidden(
                f"{owner} may not submit high-priority runs (their allowance of high-priority GPUs is 0): "
                f"submit it as normal or low, or {how}"
            )
        if allowance is not None and gpu_need > allowance:
            raise InvalidRun(
                f"this run needs {gpu_need} GPUs, more than {owner}'s allowance of high-priority GPUs "
                f"({allowance}): submit it as normal, or {how}"
            )

    def check_room(self) -> None:
        """Refuse new work while the output directory cannot take it (507/503 naming what to do)."""
        disk = self.ctx.disk.check()
        if disk.ok:
            return
        if disk.free_bytes is None:  # gone or unwritable
            raise StoreUnavailable(f"{disk.reason}: no run can be accepted until it is back")
        raise InsufficientStorage(
            f"{disk.reason}; no run is accepted until there is room: delete finished runs "
            "(DELETE /runs/<name>) or free space on that disk. Queued runs start by themselves then."
        )

    def resume(self, name: str, time_limit_s: float | None = None) -> RunRecord:
        """A failed or cancelled run goes back to the queue and continues from its last checkpoint, in the
        same run directory and WandB run, as its next attempt (the one that ended is kept: ``attempts``).
        ``time_limit_s``: how long it may run from here (up to its owner's maximum; default: the server's
        default, else what its ended attempt was allowed, else the maximum): its limit becomes what it ran plus that."""
        with self.live.cond:
            record = self.ctx.get(name)
            if record.status not in (RunStatus.FAILED, RunStatus.CANCELLED) or record.deleted_at is not None:
                state = "deleted" if record.deleted_at is not None else record.status.value
                raise RunConflict(f"run {name!r} is {state}; only a failed or cancelled run can be resumed")
            checkpoint = self.settings.output_dir / record.run_dir / "ckpt" / "last.ckpt"
            if not checkpoint.is_file():
                raise RunConflict(
                    f"run {name!r} has no checkpoint to resume from ({record.run_dir}/ckpt/last.ckpt): "
                    "rerun it instead (POST /runs/<name>/rerun starts it anew)"
                )
            self.check_room()
            owner = record.owner or LOCAL
            maximum = self.ctx.limits.of(owner).max_run_s
            # what its ended attempt was allowed (its limit less what ran before it), when no default is set
            last = record.time_limit_s - record.ran_s if record.time_limit_s is not None else None
            default = self.settings.default_time_limit_s or last
            continuation = limit_for(time_limit_s, maximum, default, owner)
            self.ctx.launcher.forget(name)
            if not self.store.requeue_attempt(name, continuation):
                raise RunConflict(f"run {name!r} changed meanwhile; try again")
            self.live.wake()
        log.info("run %s resumes as attempt %d", name, record.attempts + 1)
        return self.ctx.get(name)

    def delete(self, name: str, by: str = LOCAL) -> RunRecord:
        """Remove a finished run's files (its run directory and state folder) and keep its record, marked
        deleted, so its name is never reused. Repeating it is harmless."""
        record = self.ctx.get(name)
        if not record.status.is_terminal():
            raise RunConflict(
                f"run {name!r} is {record.status.value}; only finished runs can be deleted: cancel it first"
            )
        if record.deleted_at is not None:
            return record
        output_dir = self.settings.output_dir
        run_dir = (output_dir / record.run_dir).resolve()
        if not run_dir.is_relative_to(output_dir) or run_dir == output_dir:
            raise RunConflict(f"run {name!r} has no run directory of its own inside the output directory")
        for path in (run_dir, self.ctx.state.run(name)):
            shutil.rmtree(path, ignore_errors=True)  # what is already gone is fine; links are not followed
        self.store.mark_deleted(name, by)
        log.info("run %s deleted by %s", name, by)
        return self.ctx.get(name)


def _replay(
    existing: RunRecord | None, overrides: list[str], config_name: str | None, rerun_of: str | None
) -> RunRecord:
    """The run a key was first used for, if this request is the same one (a key is bound to what it was
    first used for: the same overrides, config and, for a rerun, the same original run)."""
    if (
        existing is None
        or existing.overrides != overrides
        or existing.config_name != (config_name or existing.config_name)
        or existing.rerun_of != rerun_of
    ):
        raise KeyReused()
    return existing
