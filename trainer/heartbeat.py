"""The run's phase in ``progress.json``, so that a long phase without training steps is never taken for a hang.

A service calls a run *stalled* when its ``progress.json`` has not changed and its log has not grown for a
while (``app/lifecycle/stalls.py``). Training steps rewrite progress.json every few seconds
(``callbacks.ProgressFile``); the phases between them report here: ``starting`` (importing the training
stack), ``data`` (building or loading the data cache: one beat per solved chunk), ``validating`` (one beat
per few batches), ``saving`` (a checkpoint), ``training`` and ``finishing``.

Beats come from the work itself (a chunk solved, a batch validated), never from a timer, so a run that
hangs inside a phase stops beating and is still caught. The one exception is ``busy``: importing the
training stack (~10 s) has no steps to report, and an import does not hang.

Light at import (no torch): the CLI uses it before the training stack is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.provenance import utc_now, write_json_atomic

PHASE_FIELDS = ("phase", "phase_done", "phase_total", "updated_at")
# Before the first training step: the file has its usual keys from the start (readers rely on them).
NOTHING_YET: dict[str, Any] = {
    "epoch": 0,
    "max_epochs": 0,
    "global_step": 0,
    "total_steps": 0,
    "fraction": 0.0,
    "train_loss": None,
    "val_loss": None,
    "metrics": {},
}


def is_rank_zero() -> bool:
    """Only the first process of a multi-device run writes the run's files."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


class PhaseReporter:
    """Writes ``progress.json``: the last training figures (kept across phases) with the current phase."""

    def __init__(
        self, path: str | os.PathLike[str], every_s: float = 2.0, enabled: bool | None = None
    ) -> None:
        self.path, self.every_s = Path(path), every_s
        self.enabled = is_rank_zero() if enabled is None else enabled
        self.phase: str | None = None
        self._last = 0.0
        self._lock = threading.Lock()
        self.figures: dict[str, Any] = _earlier_figures(self.path)  # a resumed run keeps showing its step

    def beat(
        self, phase: str, done: int | None = None, total: int | None = None, force: bool = False
    ) -> None:
        """Report ``phase`` (``done`` of ``total``); at most every ``every_s`` within one phase, unless
        ``force`` or the phase changed."""
        now = time.monotonic()
        if not self.enabled or (not force and phase == self.phase and now - self._last < self.every_s):
            return
        self.write(self.figures, phase, done, total)

    def write(
        self, figures: dict[str, Any], phase: str, done: int | None = None, total: int | None = None
    ) -> None:
        """The training ``figures`` (step, epoch, losses, ...) with the phase, atomically."""
        if not self.enabled:
            return
        with self._lock:
            self.figures = {k: v for k, v in figures.items() if k not in PHASE_FIELDS}
            self.phase = phase
            payload = {**self.figures, "phase": phase, "phase_done": done, "phase_total": total}
            write_json_atomic(self.path, {**payload, "updated_at": utc_now()})
            self._last = time.monotonic()

    @contextlib.contextmanager
    def busy(self, phase: str) -> Iterator[None]:
        """Beat every ``every_s`` while the block runs (for a step-less wait that cannot hang: an import)."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.every_s):
                with contextlib.suppress(OSError):
                    self.beat(phase, force=True)

        self.beat(phase, force=True)
        thread = threading.Thread(target=beat, daemon=True, name="labrun-heartbeat")
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=5)


def _earlier_figures(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        raw = None
    if not isinstance(raw, dict):
        return dict(NOTHING_YET)
    return {**NOTHING_YET, **{k: v for k, v in raw.items() if k not in PHASE_FIELDS}}
