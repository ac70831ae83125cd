"""``progress.json``: what a service polls to show how far a run is.

Rewritten atomically (a temporary file, then ``os.replace``) after every epoch's validation, at most
every ``every_s`` seconds of training steps, and once more when fit ends (also by an exception: a failure
or a cancel), so a reader never sees a half-written file and the last one is final. It also says which
phase the run is in (``phase``: training, validating with a beat every few batches, saving a checkpoint;
``trainer/heartbeat.py``), so that a long validation is never taken for a hang.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from typing_extensions import override

from trainer.cancel import CancelGuard, RunCancelled
from trainer.heartbeat import PhaseReporter

log = logging.getLogger(__name__)


def _number(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


class ProgressFile(L.Callback):
    def __init__(
        self, path: str | os.PathLike, every_s: float = 2.0, phases: PhaseReporter | None = None
    ) -> None:
        self.path, self.every_s = Path(path), every_s
        self.phases = phases or PhaseReporter(path, every_s, enabled=True)  # hooks check the rank
        self._last = 0.0
        self._total_steps = 0

    def write(self, trainer: L.Trainer, phase: str = "training") -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: _number(v) for k, v in trainer.callback_metrics.items()}
        metrics = {k: v for k, v in sorted(metrics.items()) if v is not None}
        total = self._total_steps
        step = int(trainer.global_step)
        self.phases.write(
            {
                "epoch": int(trainer.current_epoch),
                "max_epochs": int(trainer.max_epochs or 0),
                "global_step": step,
                "total_steps": total,
                "fraction": min(1.0, step / total) if total else 0.0,
                "train_loss": metrics.get("train_loss"),
                "val_loss": metrics.get("val_loss"),
                "metrics": metrics,
            },
            phase,
        )
        self._last = time.monotonic()

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.estimated_stepping_batches  # optimizer steps, accumulation and limits included
        self._total_steps = int(total) if math.isfinite(total) else 0
        self.write(trainer)

    @override
    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if time.monotonic() - self._last >= self.every_s:
            self.write(trainer)

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.phases.beat("validating", 0, _val_batches(trainer), force=True)

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # A heartbeat from the work itself: a validation that hangs stops beating.
        if trainer.is_global_zero:
            self.phases.beat("validating", batch_idx + 1, _val_batches(trainer))

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.write(trainer)

    @override
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: Any) -> None:
        if trainer.is_global_zero:  # called as the checkpoint is made, before it is written
            self.phases.beat("saving", force=True)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer)
        if not trainer.is_global_zero:
            return
        # One line per epoch in train.log and stdout (the service's log), progress bar or not.
        shown = {k: _number(v) for k, v in trainer.callback_metrics.items() if k != "train_loss"}
        text = " ".join(f"{k}={v:.6g}" for k, v in sorted(shown.items()) if v is not None)
        log.info(
            "epoch %d/%d step %d: %s",
            trainer.current_epoch + 1,
            trainer.max_epochs,
            trainer.global_step,
            text,
        )

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, "finishing")

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # A failed or cancelled fit: the last step, not the last periodic write (if training had begun: no
        # progress.json before that). Never hides the exception.
        if not self._last:
            return
        try:
            self.write(trainer)
        except Exception:  # a full disk must not replace the run's own error
            log.warning("could not write %s at the end of the run", self.path, exc_info=True)


def _val_batches(trainer: L.Trainer) -> int | None:
    """The validation batches of this pass (sanity check or not), when Lightning knows them."""
    counts = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
    total = sum(int(n) for n in counts if math.isfinite(n)) if isinstance(counts, list) else None
    return total or None


class StopOnCancel(L.Callback):
    """Stop at the next batch once SIGTERM (or SIGINT) came (see trainer/cancel.py) to cancel the run. A
    preemption stops at a safe point instead, with a checkpoint that resumes it exactly: trainer/preempt.py."""

    def __init__(self, guard: CancelGuard) -> None:
        self.guard = guard

    def _check(self, *_: Any) -> None:  # any batch hook: only whether to stop matters
        if self.guard.received and not self.guard.preempted:
            raise RunCancelled(self.guard.reason)

    on_train_batch_start = on_train_epoch_start = on_validation_batch_start = _check
