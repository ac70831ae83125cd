"""Records as answers: ``RunView`` adds what a client sees beside a run's record (its place in the fair
queue, why queued runs wait, its progress from progress.json, an outcome not yet recorded), ``SweepView``
the same for a sweep's runs. The wire models themselves are in ``app/api/public.py``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from app.api.public import (
    RunPublic,
    RunsPublic,
    SweepPublic,
    SweepRun,
    SweepSummary,
    run_public,
    sweep_summary,
)
from app.models import RunRecord, RunStatus
from app.runfiles import RunFiles

if TYPE_CHECKING:
    from app.lifecycle import RunLive, RunManager
    from app.lifecycle.estimates import Estimate
    from app.lifecycle.live import Stall
    from app.store import RunStore


class RunView:
    """Turns records into answers: adds what a client sees beside the record (its place in the fair queue,
    why queued runs wait, its progress from progress.json, an outcome not yet recorded).

    The polling paths (``one_json``, ``many_json``) keep each run's JSON: a run whose record (the store
    hands out the same object while its row is unchanged), place in the queue, waiting reason and
    progress (the same parsed object while progress.json is unchanged) are all as before is not built and
    serialized again. That was most of the cost of a page of 50 runs."""

    def __init__(self, files: RunFiles, manager: RunManager) -> None:
        self.files, self.manager = files, manager
        # id(record) -> (record, (position, waiting, log cut, disk warning), progress, JSON, when): one view
        # (and cache) per app
        self._fragments: dict[int, tuple[RunRecord, tuple[Any, ...], Any, bytes, float]] = {}

    def one(self, record: RunRecord, positions: Mapping[str, int] | None = None) -> RunPublic:
        return run_public(*self._inputs(record, positions))

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
        hit = self._fragments.get(key)
        # The entry holds the record and progress objects themselves, so neither id can be reused by
        # another object while it is kept; ``is`` compares them without looking inside.
        if hit is not None and hit[0] is record and record.status.is_terminal() and now - hit[4] < RECHECK_S:
            return hit[3]  # an ended run shows its record and its last progress: nothing else to look at
        inputs = self._inputs(record, positions)
        if inputs[0] is not record:  # an outcome not yet recorded: a passing state, not worth keeping
            return run_public(*inputs).model_dump_json().encode()
        shown = (*inputs[1:3], *inputs[4:])
        if hit is not None and hit[0] is record and hit[1] == shown and hit[2] is inputs[3]:
            body = hit[3]
        else:
            body = run_public(*inputs).model_dump_json().encode()
            if len(self._fragments) >= FRAGMENTS_KEPT:
                self._fragments.clear()
        self._fragments[key] = (record, shown, inputs[3], body, now)
        return body

    def many_json(self, records: list[RunRecord], total: int, next_before: int | None = None) -> bytes:
        """``many(...).model_dump_json()``, each run from ``one_json``."""
        positions, now = self._positions(records), time.monotonic()
        data = b",".join([self.one_json(r, positions, now) for r in records])
        after = b"null" if next_before is None else str(int(next_before)).encode()
        return b'{"data":[%s],"count":%d,"next_before":%s}' % (data, total, after)

    def page_json(
        self,
        store: RunStore,
        statuses: list[RunStatus],
        limit: int,
        before: int | None = None,
        owner: str | None = None,
        asked: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """A page of ``GET /runs``: runs newest first, ``limit`` of them; ``count`` is how many match in all;
        ``asked``: only runs asked these (key, value_norm) (``app/override_values.py``)."""
        records = store.list(statuses, limit + 1, before, owner, asked)  # one more: is there a next page?
        more = len(records) > limit
        records = records[:limit]
        total = len(records) if before is None and not more else store.count(statuses, owner, asked)
        return self.many_json(records, total, records[-1].seq if more else None)

    def _positions(self, records: list[RunRecord]) -> Mapping[str, int]:
        any_queued = any(r.status == RunStatus.QUEUED for r in records)
        return self.manager.queue_positions() if any_queued else {}

    def _inputs(
        self, record: RunRecord, positions: Mapping[str, int] | None
    ) -> tuple[
        RunRecord,
        int | None,
        str | None,
        dict[str, Any] | None,
        int | None,
        str | None,
        Stall | None,
        Estimate | None,
        str | None,
    ]:
        """Everything a run's answer is made of: (record, queue position, waiting reason, progress, bytes
        cut from its log, why the disk is full because of it, its stall if it stopped making progress, its
        start estimate while queued, why it starts or runs as low: its owner over budget)."""
        live = self.manager.live(record.name)
        ending = live.ending if record.status == RunStatus.RUNNING else None
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
        log_cut = self.files.log_cut_bytes(record.name) if record.started_at is not None else None
        warning = self.manager.disk.warning_for(record.name) if record.status == RunStatus.RUNNING else None
        stall = live.stall if record.status == RunStatus.RUNNING else None
        estimates = self.manager.estimates  # kept by the manager: two look-ups, never computed here
        found = estimates.of(record.name) if queued else None
        low = estimates.runs_as_low(record.name) if not record.status.is_terminal() else None
        waiting = _waiting(record, live) or (low if queued else None)
        return record, position, waiting, progress, log_cut, warning, stall, found, low


def _waiting(record: RunRecord, live: RunLive) -> str | None:
    """Why the run does not run now: why queued runs wait, or a requeue (a preemption) it waits out."""
    if record.status == RunStatus.QUEUED:
        return live.waiting_reason
    if record.status == RunStatus.RUNNING and record.preempted_by:
        return f"being preempted for {record.preempted_by}: saving a checkpoint, then back to the queue"
    attempt = live.requeued_attempt if record.status == RunStatus.RUNNING else None
    return f"requeued: preempted, waiting to run again as attempt {attempt}" if attempt else None


FRAGMENTS_KEPT = 4096  # runs' JSON kept (about 1 KB each)
# An ended run's progress.json is final, but a shared filesystem may show its last write late: looked at
# again at most this often, not on every poll of a page of finished runs (a stat each).
RECHECK_S = 2.0


class SweepView:
    """A sweep's record and runs as answers; each run is seen exactly as ``RunView`` sees it."""

    def __init__(self, runs: RunView) -> None:
        self.runs = runs

    def summary(self, sweep: Any, counts: Mapping[str, int]) -> SweepSummary:
        return sweep_summary(sweep, counts)

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
