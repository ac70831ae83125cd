"""Time limits (docs/time-limits.md): a run's limit counts its running time over all its attempts, so that
a preempted or resumed run does not start its clock again. ``ran_s`` is the running time of the attempts
before the current one (the store adds an attempt's time where it keeps it: ``requeue_attempt``,
``requeue_preempted``)."""

from __future__ import annotations

from typing import Protocol

from app.errors import InvalidRun
from labrun.durations import format_duration


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


def limit_for(asked: float | None, maximum: float | None, default: float | None, owner: str) -> float | None:
    """The time limit a new run (or a resumed run's continuation) gets: what it asked for, up to the owner's
    maximum (InvalidRun, a 422, naming it otherwise); else the server's default, up to the maximum; else the
    maximum (a run of a user with a maximum always has a limit); else none."""
    if asked is not None:
        if maximum is not None and asked > maximum:
            raise InvalidRun(
                f"a time limit of {format_duration(asked)} is over {owner}'s maximum of "
                f"{format_duration(maximum)}: ask for at most {format_duration(maximum)} ({maximum:g} s), "
                "or ask an admin to raise it (users limits --max-run-time)"
            )
        return asked
    if default is not None:
        return min(default, maximum) if maximum is not None else default
    return maximum


def extended_limit(
    run: _Timed, new_limit: float, maximum: float | None, is_admin: bool, now: float, owner: str
) -> float:
    """A running or queued run's new limit (seconds over all its attempts, as the limit always is): it must
    leave the run some time, and leave no more than the owner's maximum (an admin may go beyond it)."""
    ran = running_time(run, now)
    if new_limit <= ran:
        raise InvalidRun(
            f"a time limit of {format_duration(new_limit)} has passed already: the run has run "
            f"{format_duration(ran)}; ask for more (or add time: +2h)"
        )
    if maximum is not None and not is_admin and new_limit - ran > maximum:
        raise InvalidRun(
            f"that leaves {format_duration(new_limit - ran)} of running time, over {owner}'s maximum of "
            f"{format_duration(maximum)}: a run may have at most that much left at any moment "
            "(an admin may give more)"
        )
    return new_limit


def describe(seconds: float) -> str:
    """A limit as the run's reason and the CLI say it (6 h, 1 h 30 min)."""
    return format_duration(seconds)
