"""Time limits (docs/time-limits.md): a run's limit counts its running time over all its attempts, so that
a preempted or resumed run does not start its clock again. ``ran_s`` is the running time of the attempts
before the current one (the store adds an attempt's time where it keeps it: ``requeue_attempt``,
``requeue_preempted``)."""

from __future__ import annotations

from typing import Protocol


class _Timed(Protocol):
    """A ``RunRecord`` or a ``QueueEntry``: both carry these."""

    @property
    def started_at(self) -> float | None: ...

    @property
    def time_limit_s(self) -> float | None: ...

    @property
    def ran_s(self) -> float: ...


def running_time(run: _Timed, now: float) -> float:
    """Seconds the run has run over all its attempts (the current one up to ``now`` if it runs)."""
    current = max(0.0, now - run.started_at) if run.started_at is not None else 0.0
    return run.ran_s + current


def remaining(run: _Timed, now: float) -> float | None:
    """Seconds of its time limit left at ``now`` (never below 0); None: it has no limit."""
    if run.time_limit_s is None:
        return None
    return max(0.0, run.time_limit_s - running_time(run, now))
