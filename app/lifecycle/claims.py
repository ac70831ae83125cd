"""What a new request claims, for a single run and a sweep alike: its Idempotency-Key, a free name, and the
records it queues.

- An Idempotency-Key is its owner's own: another user's key of the same text is another key
  (``scoped_key``). A key reused for a different request is refused with ``KeyReused``.
- A generated name taken by another request of the same second is retried as ``<name>_r2``, ``_r3``, ...
  (``first_free``): the trainer's own loop (``trainer.plan.first_free``), which its ``claim`` uses too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from app.errors import RunConflict
from app.models import Priority, RunRecord, RunStatus
from trainer import plan as run_plan
from trainer.plan import MAX_RENAMES, NameInUse, RunPlan

T = TypeVar("T")


class KeyReused(RunConflict):
    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was already used for a different request; use a new key")


def scoped_key(owner: str, key: str | None) -> str | None:
    """The key as stored: ``<owner>:<key>`` (None when the request has none)."""
    return f"{owner}:{key}" if key else None


def first_free(take: Callable[[int], T], what: str, attempts: int = MAX_RENAMES) -> T:
    """The trainer's one rename loop (``trainer.plan.first_free``), its failure as a 409."""
    try:
        return run_plan.first_free(take, what, attempts)
    except NameInUse:
        raise RunConflict(f"could not find {what}; try again") from None


def new_record(
    plan: RunPlan,
    owner: str,
    *,
    idempotency_key: str | None = None,
    rerun_of: str | None = None,
    sweep: str | None = None,
    sweep_index: int | None = None,
    stall_after_s: float | None = None,
    priority: Priority = Priority.NORMAL,
    time_limit_s: float | None = None,
    after: list[dict[str, str]] | None = None,
) -> RunRecord:
    """A queued run's record, made from its plan (``idempotency_key`` as ``scoped_key`` made it); its
    ``init_from`` is its config's (docs/run-chains.md), ``after`` what it waits for."""
    source = plan.job.get("init_from")
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
        sweep=sweep,
        sweep_index=sweep_index,
        default_overrides=plan.defaults,
        stall_after_s=stall_after_s,
        priority=priority,
        time_limit_s=time_limit_s,
        after=after or None,
        init_from=str(source) if source else None,
    )
