"""Sweeps: one request, N runs. Hydra's multirun syntax expanded, every run validated, all queued at once.

    POST /sweeps ──expand (trainer/sweep.py: Hydra's basic sweeper)──> N override lists
                 ──plan each (RunValidator.plan: the same checks as POST /runs) ──> N named runs
                 ──RunManager.queue_together: ONE store transaction (the sweep's row + N runs)──> queued

All or nothing: a run that fails validation refuses the whole sweep (422 naming the combination), and the
runs and the sweep's row are written in one SQLite transaction, so even a kill -9 mid-way leaves the whole
sweep or none of it. From then on the runs are ordinary runs of their owner (fair share, limits, cancel,
logs); a run that fails does not stop the others.

Layout (``trainer/sweep.py``): the sweep ``S`` (named like a run: date, time, model/data, its lines) files
its runs under ``<YYYY-MM-DD>/S/<index>_<run name>``; every run's WandB run is in the WandB group ``S``
(the service hands the trainer ``LABRUN_SWEEP``). ``rerun`` re-submits the failed and cancelled runs of a
sweep into the same sweep, at the same indices (a sweep shows the latest attempt of each index).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from app.errors import InvalidRun, NotFound, RunConflict
from app.lifecycle import KeyReused, RunManager, dependencies, first_free, new_record, scoped_key
from app.models import Priority, RunRecord, RunStatus, SweepRecord
from app.store import IdempotencyKeyTaken, NameTaken
from trainer import naming
from trainer import overrides as overrides_parser
from trainer import sweep as hydra_sweep
from trainer.plan import NameInUse, RunPlan, rename_suffix
from trainer.sweep import SweepError, SweepSlot

_GROUPS = ("model", "data")  # the config groups a sweep's name shows


class SweepNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no sweep named {name!r}")


@dataclass(frozen=True)
class _Request:
    """A sweep request, expanded: what every try of its name plans and queues."""

    overrides: list[str]  # as requested
    config_name: str
    swept: list[str]
    runs: list[list[str]]  # each run's override lines
    choices: list[dict[str, str]]  # each run's model and data, for the sweep's name
    planner: Callable[..., RunPlan]
    owner: str
    key: str | None  # the Idempotency-Key, scoped to its owner
    when: dt.datetime  # the time in its names
    priority: Priority = Priority.NORMAL  # every run's class (docs/priorities.md)
    time_limit_s: float | None = None  # every run's time limit (docs/time-limits.md)
    after: list[dict[str, str]] | None = None  # what every run waits for (docs/run-chains.md)


class Sweeps:
    """The sweep lifecycle over a ``RunManager`` (whose runs they are); cheap to make, one per request."""

    def __init__(self, manager: RunManager) -> None:
        self.manager = manager
        self.store = manager.store
        self.settings = manager.settings

    # --- submit -----------------------------------------------------------------------------------------

    def submit(
        self,
        overrides: Sequence[str],
        config_name: str | None = None,
        idempotency_key: str | None = None,
        owner: str = "local",
        priority: Priority = Priority.NORMAL,
        time_limit_s: float | None = None,
        after: Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[SweepRecord, bool]:
        """Expand, validate and queue ``owner``'s sweep; (sweep, replayed) as ``RunManager.submit``.
        ``after``: what every run of it waits for (docs/run-chains.md)."""
        overrides = list(overrides)
        key = scoped_key(owner, idempotency_key)
        if key and (existing := self._by_key(key)) is not None:
            return self._replay(existing, overrides, config_name), True
        self._check_bounds(overrides)
        limit = self.manager.admission.time_limit(owner, time_limit_s)  # a 422 before any planning
        deps = dependencies.parse(after)
        dependencies.check_named(self.store, deps)
        try:
            parsed = hydra_sweep.parse(overrides)
            runs = hydra_sweep.expand(parsed, self.settings.max_sweep_runs)
        except SweepError as exc:
            raise InvalidRun(str(exc)) from None
        self.manager.check_can_queue(owner, len(runs))  # before the planning: a 429 at once
        # One planner for all runs: what they share (the config name, the common lines) is checked once.
        planner = self.manager.validator.planner(config_name)
        first = self._plan(planner, runs[0], 0)  # its group choices fill in the name's model/data
        request = _Request(
            overrides=overrides,
            config_name=first.config_name,
            swept=hydra_sweep.swept_keys(parsed),
            runs=runs,
            choices=[_choices(lines, first.choices) for lines in runs],
            planner=planner,
            owner=owner,
            key=key,
            when=dt.datetime.now(),
            priority=priority,
            time_limit_s=limit,
            after=[d.as_dict() for d in deps] or None,
        )
        try:
            name = first_free(lambda attempt: self._queue(request, attempt), "a free sweep name")
        except IdempotencyKeyTaken:  # a concurrent request with the same key won
            existing = self._by_key(key or "")
            if existing is None:  # pragma: no cover - a key taken and gone again
                raise
            return self._replay(existing, overrides, config_name), True
        return self.get(name), False

    def _queue(self, request: _Request, attempt: int) -> str:
        """Plan and queue the sweep under its name's ``attempt``-th try; NameInUse when it is taken."""
        suffix, size = rename_suffix(attempt), len(request.runs)
        name = hydra_sweep.sweep_name(request.choices, request.overrides, request.when, suffix)
        records = []
        for i, lines in enumerate(request.runs):
            slot = SweepSlot(name, i, size)
            plan = self._plan(request.planner, lines, i, when=request.when, suffix=suffix, sweep=slot)
            # Only the record is kept: the plan's configs (thousands of objects in reference cycles)
            # die young, instead of 256 of them living on through the garbage collector's full passes.
            records.append(
                new_record(
                    plan,
                    request.owner,
                    sweep=name,
                    sweep_index=i,
                    priority=request.priority,
                    time_limit_s=request.time_limit_s,
                    after=request.after,
                )
            )
        sweep = SweepRecord(
            seq=0,
            name=name,
            owner=request.owner,
            config_name=request.config_name,
            overrides=request.overrides,
            swept=request.swept,
            size=size,
            run_dir=naming.run_subdir(name),
            created_at=time.time(),
            idempotency_key=request.key,
        )
        out = self.settings.output_dir
        if (out / sweep.run_dir).exists() or any((out / r.run_dir).exists() for r in records):
            raise NameInUse(name)  # left over from an earlier store: a new sweep gets a folder of its own
        try:
            self.manager.queue_together(records, request.owner, sweep=sweep)
        except NameTaken:  # a sweep or run of that name exists (the same request in the same second)
            raise NameInUse(name) from None
        return name

    def _check_bounds(self, overrides: list[str]) -> None:
        """The request's own bounds (each run's lines are checked again as a single run's are). A line of
        the sweep may be longer than one run's (a list of 64 values), the whole request may not."""
        s = self.settings
        if len(overrides) > s.max_overrides:
            raise InvalidRun(f"too many overrides ({len(overrides)}); at most {s.max_overrides} per sweep")
        total = sum(len(o.encode(errors="replace")) for o in overrides)
        if total > s.max_overrides_bytes:
            raise InvalidRun(f"overrides total {total} bytes; at most {s.max_overrides_bytes} per sweep")

    def _plan(
        self, planner: Callable[..., RunPlan], lines: list[str], index: int, **placement: Any
    ) -> RunPlan:
        try:
            return planner(lines, **placement)
        except InvalidRun as exc:
            raise InvalidRun(
                f"run {index} of the sweep ({' '.join(lines)}) is invalid, so nothing was queued: {exc.detail}"
            ) from None

    def _replay(self, existing: SweepRecord, overrides: list[str], config_name: str | None) -> SweepRecord:
        if existing.overrides != overrides or existing.config_name != (config_name or existing.config_name):
            raise KeyReused()
        return existing

    # --- reads ------------------------------------------------------------------------------------------

    def get(self, name: str) -> SweepRecord:
        found = self.store.sweeps.get(name)
        if found is None:
            raise SweepNotFound(name)
        return found

    def _by_key(self, key: str) -> SweepRecord | None:
        return self.store.sweeps.get_by_idempotency_key(key)

    def list(
        self, limit: int = 50, before: int | None = None, owner: str | None = None
    ) -> builtins.list[SweepRecord]:
        """Newest first; ``before``: only sweeps older than that ``seq`` (keyset paging)."""
        return self.store.sweeps.list(limit, before, owner)

    def counts(self, names: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per sweep, its current runs (the latest attempt of each index) by status."""
        return self.store.sweeps.counts(names)

    def runs(self, name: str, every_attempt: bool = False) -> builtins.list[RunRecord]:
        """The sweep's runs by index: the latest attempt of each (``every_attempt``: all, oldest first)."""
        self.get(name)  # 404 for an unknown sweep
        records = self.store.in_sweep(name)
        if every_attempt:
            return records
        latest: dict[int, RunRecord] = {}
        for r in records:
            latest[r.sweep_index or 0] = r
        return [latest[i] for i in sorted(latest)]

    # --- changes ----------------------------------------------------------------------------------------

    def cancel(self, name: str, by: str) -> builtins.list[RunRecord]:
        """Cancel every queued and running run of the sweep: the queued ones first (none of them starts
        meanwhile), then the running ones, all at once (each gets its grace period in parallel)."""
        pending = [r for r in self.runs(name, every_attempt=True) if not r.status.is_terminal()]
        queued = [r for r in pending if r.status == RunStatus.QUEUED]
        running = [r for r in pending if r.status != RunStatus.QUEUED]
        for record in queued:
            self._cancel_one(record.name, by)
        if running:
            with ThreadPoolExecutor(max_workers=min(16, len(running))) as pool:
                list(pool.map(lambda r: self._cancel_one(r.name, by), running))
        return self.runs(name)

    def _cancel_one(self, name: str, by: str) -> None:
        with contextlib.suppress(RunConflict):  # it ended meanwhile
            self.manager.cancel(name, by)

    def rerun(
        self, name: str, idempotency_key: str | None = None, owner: str = "local"
    ) -> tuple[SweepRecord, bool]:
        """Queue the failed and cancelled runs of the sweep again (same overrides and seed, same indices, in
        the sweep's folder, all at once); each new run's ``rerun_of`` names the run it repeats."""
        sweep = self.get(name)
        key = scoped_key(owner, idempotency_key)
        if key and (existing := self.store.get_by_idempotency_key(key)) is not None:
            if existing.sweep != name:
                raise KeyReused()
            return sweep, True
        redo = [r for r in self.runs(name) if r.status in (RunStatus.FAILED, RunStatus.CANCELLED)]
        if not redo:
            raise RunConflict(f"sweep {name!r} has no failed or cancelled runs to rerun")
        when = dt.datetime.now()

        def take(attempt: int) -> None:
            suffix = rename_suffix(attempt)
            records = []
            for i, original in enumerate(redo):
                index = original.sweep_index or 0
                plan = self._replan(original, SweepSlot(name, index, sweep.size), when, suffix)
                first_key = key if i == 0 else None  # the key is the request's: one run carries it
                records.append(
                    new_record(
                        plan,
                        owner,
                        idempotency_key=first_key,
                        rerun_of=original.name,
                        sweep=name,
                        sweep_index=index,
                        priority=original.priority,
                        time_limit_s=self.manager.admission.asked_again(original, owner),
                    )
                )
            if any((self.settings.output_dir / r.run_dir).exists() for r in records):
                raise NameInUse(records[0].name)
            try:
                self.manager.queue_together(records, owner)
            except NameTaken:
                raise NameInUse(records[0].name) from None

        try:
            first_free(take, "free run names")
        except IdempotencyKeyTaken:
            return sweep, True
        return sweep, False

    def _replan(self, original: RunRecord, slot: SweepSlot, when: dt.datetime, suffix: str) -> RunPlan:
        overrides = list(original.overrides)
        defaults = list(original.default_overrides or [])  # the ones it got, not the server's current ones
        place = {"when": when, "suffix": suffix, "sweep": slot}
        plan = self.manager.validator.plan(overrides, original.config_name, defaults, **place)
        if original.seed is not None and plan.seed != original.seed:  # conf/ changed its default seed
            plan = self.manager.validator.plan(
                [*overrides, f"seed={original.seed}"], original.config_name, defaults, **place
            )
        return plan


def key_overrides(record: RunRecord, swept: Sequence[str]) -> list[str]:
    """The lines of a sweep's run that tell it apart from the others (those of the swept keys)."""
    keys = set(swept)
    parsed = overrides_parser.parse(record.overrides)
    # input_line is Optional in Hydra's type but set on every override parsed from a line
    return [o.input_line for o in parsed if o.input_line is not None and o.get_key_element() in keys]


def _choices(lines: Sequence[str], first: dict[str, str]) -> dict[str, str]:
    """The model and data a run's lines pick: the first run's choices, changed by its own group lines (every
    run of a sweep sets the same keys, so what the first left at the default, they all do)."""
    chosen = {g: first.get(g, "") for g in _GROUPS}
    for o in overrides_parser.parse(lines):
        if o.key_or_group in _GROUPS and o.package is None and not o.is_delete() and not o.is_add():
            chosen[o.key_or_group] = str(o.value())
    return chosen
