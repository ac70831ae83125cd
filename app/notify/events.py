"""The kinds of event, and who gets which.

A run's event goes to its owner's destinations when its kind is among the events chosen for it: the run's
own choice at submission (``"notify": [...]``) if it made one, else its sweep's choice, else (for a run
outside a sweep) the owner's defaults. The runs of a sweep send nothing of their own by default: the
sweep's end sends one message (``sweep_finished``), if the sweep's choice or the owner's defaults have it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from app.notify.errors import InvalidDestination


class EventKind(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SWEEP_FINISHED = "sweep_finished"
    PREEMPTED = "preempted"  # back to the queue for a higher-priority run (docs/priorities.md)
    RESUMED = "resumed"  # a preempted run's next attempt started
    TIME_LIMIT_NEAR = "time_limit_near"  # LABRUN_TIME_LIMIT_WARN_S before its limit (docs/time-limits.md)
    TIME_LIMIT_REACHED = "time_limit_reached"  # it saved a checkpoint and stopped at its limit (resumable)
    # a reservation of theirs (docs/reservations.md): starts within LABRUN_RESERVE_NOTICE_S, started, ended
    RESERVATION_SOON = "reservation_soon"
    RESERVATION_STARTED = "reservation_started"
    RESERVATION_ENDED = "reservation_ended"


DEFAULT_EVENTS: tuple[EventKind, ...] = (
    EventKind.FAILED,
    EventKind.SWEEP_FINISHED,
    EventKind.TIME_LIMIT_NEAR,
    EventKind.TIME_LIMIT_REACHED,
    EventKind.RESERVATION_SOON,
    EventKind.RESERVATION_STARTED,
    EventKind.RESERVATION_ENDED,
)


class ServerCondition(StrEnum):
    """The server's own events (``server_events.py``), for the server-wide destinations an admin sets: each
    sent when the condition starts and when it clears."""

    GPU_BUSY_OUTSIDE = "gpu_busy_outside"
    DISK_LOW = "disk_low"
    ENGINE_DOWN = "engine_down"
    RESERVATION_BLOCKED = "reservation_blocked"  # a reserved GPU busy outside labrun at its window's start


# The owner of the server-wide destinations: not a name a user can have (app/users.py: [a-z][a-z0-9_-]*).
SERVER = "@server"


def parse_events(values: Iterable[str], server: bool = False) -> list[str]:
    """Event names as given by a user, checked (``all`` and ``none`` as shorthands); ``server``: the
    server's events (``ServerCondition``) instead of the runs'."""
    kinds: tuple[StrEnum, ...] = tuple(ServerCondition) if server else tuple(EventKind)
    known = {k.value for k in kinds}
    found: list[str] = []
    for value in values:
        for name in (v.strip().lower() for v in value.split(",")):
            if name in ("", "none"):
                continue
            if name == "all":
                found.extend(k.value for k in kinds)
            elif name in known:
                found.append(name)
            else:
                raise InvalidDestination(
                    f"unknown notification event {name!r}; use some of: {', '.join(sorted(known))}, all, none"
                )
    return list(dict.fromkeys(found))


def wanted(
    kind: str,
    run_choice: list[str] | None,
    sweep_choice: list[str] | None,
    in_sweep: bool,
    defaults: list[str] | None,
) -> bool:
    """Whether an event of ``kind`` is sent (see the module's docstring)."""
    if kind == EventKind.SWEEP_FINISHED:
        chosen = sweep_choice if sweep_choice is not None else defaults
    elif run_choice is not None:
        chosen = run_choice
    elif in_sweep:
        chosen = sweep_choice or []
    else:
        chosen = defaults
    if chosen is None:
        chosen = [k.value for k in DEFAULT_EVENTS]
    return kind in chosen
