"""The run lifecycle: submit, dispatch, watch, finish, cancel, rerun, resume, recover.

    submit ──> queued ──dispatch──> running ──the watcher sees the exit──> succeeded | failed | cancelled
                  └──cancel──> cancelled          └──cancel: SIGTERM, grace, SIGKILL──> cancelled

One room per concern, behind one facade (``RunManager``, ``manager.py``) that owns the lock and the live
state (``live.py``) the rooms share:

    admission.py    what enters the queue (submit, rerun, resume, a sweep's runs), and what refuses it
    claims.py       what a request claims: its Idempotency-Key, a free name, its records
    limits.py       per-user limits (``UserLimits``)
    picking.py      which queued runs start now, and which runs to preempt for whom (a policy: priority
                    classes, then fair share), no side effects
    preemption.py   stopping the runs picked as victims, and putting them back in the queue
    dispatch.py     starting what the policy picked: reserve, note, launch; queue positions
    supervision.py  following running runs and recording how they ended
    cancel.py       cancels (by request, recorded before a restart, past the time limit)
    stalls.py       running runs that stopped making progress: stalled, extended, cancelled after a grace
    recovery.py     what start-up does: reconcile unfinished runs, release leftovers

Invariants, and how they hold:
- Every state change happens under one lock (``LiveState.cond``) and is a compare-and-set in the store, so
  a cancel can never race a dispatch: a run being launched is "starting", and a cancel waits for that.
- Crash safety: GPUs are noted in the store, then the launcher starts the run, then queued -> running is
  recorded with its handle; ``recovery.py`` repairs a kill -9 anywhere in between.
- Resources (``app/scheduling.py``): a GPU is owned by at most one run; CPU runs are capped at MAX_CPU_RUNS.
  A run waiting for GPUs does not hold back CPU runs, and vice versa.
"""

from app.lifecycle.claims import KeyReused, first_free, new_record, scoped_key
from app.lifecycle.limits import UserLimits
from app.lifecycle.live import Ending, RunLive
from app.lifecycle.manager import RunManager

__all__ = [
    "Ending",
    "KeyReused",
    "RunLive",
    "RunManager",
    "UserLimits",
    "first_free",
    "new_record",
    "scoped_key",
]
