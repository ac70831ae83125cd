"""What the stall watcher keeps of a run on disk, so that a restart of the service neither forgets a stall
nor hastens one (``stalls.py``).

Most of a run's stall clock needs no keeping: the times its ``progress.json`` and its log last changed are
their modification times, which the run itself sets (it writes both files, also while the service is down).
What only the watcher knows is kept here, in ``stall.json`` in the run's state folder:

- ``clock_from``: when the run's clock last started: when the watcher first saw this attempt executing (or
  executing again after its cluster requeued it), or when its owner extended it. Its last activity is never
  older than this, so an old ``progress.json`` (a resumed run's) or an extension is not forgotten.
- ``gpu_idle_from``: while the run is stalled by the GPU rule, since when its GPUs were at 0% while it was
  training. The guard knows nothing of the time before its own start; after a restart this stands for it.
- ``cancel``: the reason, once the watcher decided to cancel the run for its stall. A restart carries the
  cancel out (and records it with that reason), whether the run still runs or ended meanwhile.

One file per attempt (``attempt``; a resume removes it with the attempt's other files). Written a few times
in a run's life (its start, an extension, a stall, a cancel), atomically; a write that fails (a full disk)
costs only what a restart would otherwise remember.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

from app.statedir import RunFiles
from trainer.atomic import write_atomic

log = logging.getLogger("labrun.lifecycle")


@dataclass
class StallClock:
    attempt: int
    clock_from: float | None = None
    gpu_idle_from: float | None = None
    cancel: str | None = None


def load(files: RunFiles, attempt: int) -> StallClock:
    """The run's kept clock for ``attempt``; an empty one when there is none (or it is another attempt's)."""
    try:
        raw: Any = json.loads(files.stall_clock.read_text())
    except (OSError, ValueError):
        return StallClock(attempt)
    if not isinstance(raw, dict) or raw.get("attempt") != attempt:
        return StallClock(attempt)
    return StallClock(
        attempt,
        _number(raw.get("clock_from")),
        _number(raw.get("gpu_idle_from")),
        raw["cancel"] if isinstance(raw.get("cancel"), str) else None,
    )


def save(files: RunFiles, clock: StallClock) -> None:
    try:
        write_atomic(files.stall_clock, json.dumps(asdict(clock)) + "\n")
    except OSError as exc:  # a full disk: only what a restart would remember is lost
        log.warning("could not keep the stall clock of %s: %s", files.dir.name, exc)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
