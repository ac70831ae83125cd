"""Run chains (docs/run-chains.md): runs that wait for runs (``after``), and a run that starts from another
run's checkpoint (``init_from``, a key of the experiment's config).

A run (or every run of a sweep) may name runs and sweeps it waits for, each with ``when``: ``succeeded``
(the default) or ``ended``. It is stored queued, with its ``after`` (``runs.after``), and the dispatcher
leaves it out of every round (``held``) until all of them are done; if one ends otherwise (failed or
cancelled where it had to succeed, or its files deleted), the waiting run is cancelled with a reason that
names it, which is an ordinary run end (its notification is written by the store's trigger). Chains
cascade: the cancel of one waiting run is an end that the runs waiting for it see next.

Only runs and sweeps that exist can be named, so there are no cycles. The decision is one pure function
(``judge``) over what the store says (``store.chains``: one query for the waiting runs, one for the states
they name); it is made again only when the store changed (its ``version``): at the start of a dispatch
round, and by ``loop`` for what no round would see soon (a queued run cancelled, a run deleted).

``init_from``: the service checks at submission that the named run exists and has a checkpoint, unless the
run waits for it (``after``), where the check is made once the dependency is satisfied. At launch the
service resolves the name to the checkpoint's path (``checkpoint_of``: never a path from a request, never a
link) and hands it to the trainer as ``LABRUN_INIT_FROM_CKPT`` (``trainer/runenv.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from app.errors import InvalidRun, LaunchError
from app.lifecycle.live import Context
from app.models import RunRecord, RunStatus
from app.store import RunStore
from app.store.chains import RunState, SweepState
from trainer.resume import LAST_CKPT

log = logging.getLogger("labrun.lifecycle")

MAX_AFTER = 20  # what one request may wait for
WHENS = ("succeeded", "ended")
KINDS = ("run", "sweep")
MAX_CASCADE = 64  # rounds of cancels one settle follows (a longer chain goes on at the next one)
SETTLE_INTERVAL_S = 0.5
_ACTIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


@dataclass(frozen=True)
class Dependency:
    kind: str  # "run" or "sweep"
    name: str
    when: str  # "succeeded" or "ended"

    def as_dict(self) -> dict[str, str]:
        return {self.kind: self.name, "when": self.when}

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


class Verdict(NamedTuple):
    ready: bool
    cancel: str | None = None  # the reason it is cancelled (a dependency ended otherwise)
    waiting: str | None = None  # what it waits for, in words


# --- the request ---------------------------------------------------------------------------------------


def parse(after: Sequence[Mapping[str, Any]] | None) -> list[Dependency]:
    """A request's ``after`` as dependencies (duplicates dropped); InvalidRun naming the entry and the fix."""
    if not after:
        return []
    if len(after) > MAX_AFTER:
        raise InvalidRun(f"after names {len(after)} runs and sweeps; at most {MAX_AFTER} per request")
    found: dict[tuple[str, str], Dependency] = {}
    for i, entry in enumerate(after):
        named = [k for k in KINDS if entry.get(k) is not None]
        unknown = sorted(set(entry) - {*KINDS, "when"})
        if unknown or len(named) != 1:
            what = f"unknown key {unknown[0]!r}" if unknown else f"{len(named)} of run, sweep"
            raise InvalidRun(
                f'after[{i}] has {what}: write {{"run": NAME}} or {{"sweep": NAME}}, with "when": '
                '"succeeded" (the default) or "ended"'
            )
        name, when = entry[named[0]], entry.get("when") or "succeeded"
        if not isinstance(name, str) or not name:
            raise InvalidRun(f"after[{i}].{named[0]} must be a {named[0]}'s name")
        if when not in WHENS:
            raise InvalidRun(f"after[{i}].when={when!r} is not one of {', '.join(WHENS)}")
        dep = Dependency(named[0], name, when)
        found.setdefault((dep.kind, dep.name), dep)
    return list(found.values())


def of_record(after: Iterable[Mapping[str, str]] | None) -> list[Dependency]:
    """The dependencies a stored run waits for (stored by ``Dependency.as_dict``)."""
    deps = []
    for entry in after or ():
        kind = "sweep" if "sweep" in entry else "run"
        deps.append(Dependency(kind, entry[kind], entry.get("when", "succeeded")))
    return deps


def check_named(store: RunStore, deps: Sequence[Dependency]) -> None:
    """Every dependency exists and can still be satisfied now; InvalidRun naming the first that is not.
    (Anyone may read any run, so the caller may name any that exists; a new run cannot be named by an
    older one, so no chain is a cycle.)"""
    runs = store.chains.runs([d.name for d in deps if d.kind == "run"])
    sweeps = store.chains.sweeps([d.name for d in deps if d.kind == "sweep"])
    for i, dep in enumerate(deps):
        if dep.kind == "run" and dep.name not in runs:
            raise InvalidRun(f"after[{i}]: no run named {dep.name!r} (GET /runs lists them)")
        if dep.kind == "sweep" and dep.name not in sweeps:
            raise InvalidRun(f"after[{i}]: no sweep named {dep.name!r} (GET /sweeps lists them)")
        cancel = _judge_one(dep, runs, sweeps)[1]
        if cancel is not None:
            raise InvalidRun(
                f"after[{i}]: {dep.label} already ended otherwise ({cancel}), so this run could never "
                'start: wait for another, or use "when": "ended"'
            )


def check_init_from(
    store: RunStore, output_dir: Path, source: str | None, deps: Sequence[Dependency]
) -> None:
    """``init_from``: the run exists and has a checkpoint, or the request waits for it (then its checkpoint
    is looked for once it is done); InvalidRun naming what is missing."""
    if not source:
        return
    record = store.get(source)
    if record is None:
        raise InvalidRun(f"init_from={source!r}: no run named {source!r} (GET /runs lists them)")
    if record.deleted_at is not None:
        raise InvalidRun(f"init_from={source!r}: that run's files were deleted, its checkpoint with them")
    if any(d.kind == "run" and d.name == source for d in deps):
        return  # its checkpoint is looked for when it is done
    if checkpoint_of(output_dir, record) is None:
        raise InvalidRun(
            f"init_from={source!r}: run {source} ({record.status.value}) has no checkpoint "
            f"(ckpt/{LAST_CKPT}) to start from; wait for it to save one with after "
            f'([{{"run": "{source}"}}], labrun submit --after {source})'
        )


def checkpoint_of(output_dir: Path, record: RunRecord) -> Path | None:
    """The checkpoint a run started from ``record`` takes its weights from: ``ckpt/last.ckpt`` of its run
    directory, as a real path; None when there is none, its files were deleted, or it is a link (a run
    writes its own directory: a link there could lead to any file the service may read)."""
    if record.deleted_at is not None:
        return None
    root = Path(os.path.realpath(output_dir))
    run_dir = Path(os.path.realpath(output_dir / record.run_dir))
    path = Path(os.path.realpath(run_dir / "ckpt" / LAST_CKPT))
    if path != run_dir / "ckpt" / LAST_CKPT or root not in run_dir.parents or not path.is_file():
        return None
    return path


# --- the decision ------------------------------------------------------------------------------------------


def judge(
    deps: Sequence[Dependency], runs: Mapping[str, RunState], sweeps: Mapping[str, SweepState]
) -> Verdict:
    """Whether a run that waits for ``deps`` may start, must be cancelled, or waits (and for what)."""
    waiting = []
    for dep in deps:
        pending, cancel = _judge_one(dep, runs, sweeps)
        if cancel is not None:
            return Verdict(False, cancel=f"cancelled: {dep.label} it waits for {cancel}")
        if pending:
            waiting.append(pending)
    if waiting:
        return Verdict(False, waiting="waiting for " + "; ".join(waiting))
    return Verdict(True)


def _judge_one(
    dep: Dependency, runs: Mapping[str, RunState], sweeps: Mapping[str, SweepState]
) -> tuple[str | None, str | None]:
    """(what it still waits for, or None; why it can never be satisfied, or None)."""
    goal = "succeed" if dep.when == "succeeded" else "end"
    if dep.kind == "run":
        run = runs.get(dep.name)
        if run is None or run.deleted:
            return None, "was deleted"
        if run.status in _ACTIVE:
            return f"run {dep.name} to {goal} (it is {run.status})", None
        if dep.when == "ended" or run.status == RunStatus.SUCCEEDED.value:
            return None, None
        return None, "was cancelled" if run.status == RunStatus.CANCELLED.value else run.status
    sweep = sweeps.get(dep.name)
    if sweep is None or sweep.deleted:
        return None, "was deleted" if sweep is not None else "no longer exists"
    left = sum(n for s, n in sweep.counts.items() if s in _ACTIVE)
    if left:
        total = sum(sweep.counts.values())
        return f"sweep {dep.name} to {goal} ({left} of its {total} runs not done)", None
    others = {s: n for s, n in sweep.counts.items() if s != RunStatus.SUCCEEDED.value and n}
    if dep.when == "ended" or not others:
        return None, None
    return None, "ended with " + ", ".join(f"{n} {s}" for s, n in sorted(others.items())) + " run(s)"


def states(store: RunStore, deps: Sequence[Dependency]) -> list[dict[str, Any]]:
    """Each dependency with the state of what it names now (GET /runs/{name})."""
    runs = store.chains.runs([d.name for d in deps if d.kind == "run"])
    sweeps = store.chains.sweeps([d.name for d in deps if d.kind == "sweep"])
    out = []
    for dep in deps:
        pending, cancel = _judge_one(dep, runs, sweeps)
        if dep.kind == "run":
            run = runs.get(dep.name)
            state = None if run is None else "deleted" if run.deleted else run.status
        else:
            sweep = sweeps.get(dep.name)
            state = None if sweep is None else "running" if pending else "ended"
        out.append({**dep.as_dict(), "state": state, "satisfied": pending is None and cancel is None})
    return out


# --- the lifecycle's room ------------------------------------------------------------------------------------


class Dependencies:
    """Holds back the queued runs that wait, releases them, cancels those that never can start."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.store, self.live = ctx, ctx.store, ctx.live
        self._seen: int | None = None  # the store's version at the last settle
        self._held: frozenset[str] = frozenset()
        self._checked: set[str] = set()  # released runs whose init_from checkpoint was found

    def held(self) -> frozenset[str]:
        """(Under the lock.) The queued runs that wait: the dispatcher leaves them out. Settled again first
        when the store changed since the last time (a dict look-up otherwise)."""
        if self.store.version != self._seen:
            self.settle()
        return self._held

    def settle(self) -> None:
        """(Under the lock.) Decide for every waiting run; cancel those that can never start, and follow
        the cancels down the chains."""
        for _ in range(MAX_CASCADE):
            version = self.store.version
            cancels = self._decide()
            if not cancels:
                self._seen = version
                return
            for name, reason in cancels:
                self._cancel(name, reason)

    def _decide(self) -> list[tuple[str, str]]:
        waiting = self.store.chains.waiting()
        deps = {w.name: of_record(w.after) for w in waiting}
        wanted = [d for found in deps.values() for d in found]
        runs = self.store.chains.runs([d.name for d in wanted if d.kind == "run"]) if wanted else {}
        sweeps = self.store.chains.sweeps([d.name for d in wanted if d.kind == "sweep"]) if wanted else {}
        reasons: dict[str, str] = {}
        cancels: list[tuple[str, str]] = []
        for w in waiting:
            verdict = judge(deps[w.name], runs, sweeps)
            if verdict.cancel is not None:
                cancels.append((w.name, verdict.cancel))
            elif verdict.waiting is not None:
                reasons[w.name] = verdict.waiting
            elif w.init_from and w.name not in self._checked:
                missing = self._missing_checkpoint(w.init_from)
                if missing is not None:
                    cancels.append((w.name, missing))
                else:
                    self._checked.add(w.name)
        self._checked &= {w.name for w in waiting}
        self._held = frozenset(reasons)
        self.live.after_waiting = reasons  # replaced whole: the API reads it without the lock
        return [(n, r) for n, r in cancels if n not in self.live.starting]

    def _missing_checkpoint(self, source: str) -> str | None:
        record = self.store.get(source)
        if record is not None and checkpoint_of(self.ctx.settings.output_dir, record) is not None:
            return None
        return f"cancelled: run {source} it starts from (init_from) has no checkpoint (ckpt/{LAST_CKPT})"

    def _cancel(self, name: str, reason: str) -> None:
        """(Under the lock.) As a queued run's cancel, with the reason: an ordinary end (notified)."""
        live = self.live
        if self.store.finish(name, [RunStatus.QUEUED], RunStatus.CANCELLED, reason=reason):
            log.info("run %s %s", name, reason)
        live.order_dirty = True
        live.unreconciled.discard(name)
        live.slots.free(name)

    def loop(self) -> None:
        """What no dispatch round would see soon (a queued run cancelled or a run deleted: nothing wakes the
        dispatcher): settled within ``SETTLE_INTERVAL_S``, and the dispatcher woken for what it released."""
        live = self.live
        while not live.stopping.wait(SETTLE_INTERVAL_S):
            try:
                with live.cond:
                    if self.store.version == self._seen:
                        continue
                    before = self._held
                    self.settle()
                    if before - self._held:
                        live.wake()
            except Exception:  # e.g. the store refused a write: tried again at the next change
                log.exception("settling the runs that wait failed")
                self._seen = None


def launch_checkpoint(ctx: Context, record: RunRecord) -> Path | None:
    """The checkpoint a run being launched starts from (``LABRUN_INIT_FROM_CKPT``), resolved now from its
    ``init_from``. Its first attempt without one cannot start (LaunchError: it fails, saying so); a later
    attempt resumes from its own checkpoint and does without."""
    if not record.init_from:
        return None
    source = ctx.store.get(record.init_from)
    path = checkpoint_of(ctx.settings.output_dir, source) if source is not None else None
    if path is None and record.attempts == 1:
        raise LaunchError(
            f"run {record.init_from} it starts from (init_from) has no checkpoint (ckpt/{LAST_CKPT}) any more"
        )
    return path
