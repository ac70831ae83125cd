"""A preemption that loses nothing: stop at a safe point, save what an exact continuation needs, resume it.

When the run is preempted (``trainer/resume.py`` says which signals are a preemption), ``PreemptStop`` lets
the current batch finish and stops at the next *safe point*:

- in the middle of an epoch, right after an optimizer step that is neither the epoch's last batch nor one
  followed by a validation (on one device): ``ckpt/last.ckpt`` is written at that batch's end, the point
  Lightning's own step-based checkpoints are written and resumed from, and the run stops before the next
  batch;
- otherwise (the signal came during the last batch or a validation, or gradients are being accumulated
  over the epoch's last batches, or the run spans several devices, whose sampler shards the epoch's order):
  the epoch runs to its end, validation and logged metrics included, and fit stops there; the checkpoint
  is written after the epoch is complete, so the next attempt starts the next epoch and nothing is redone;
- a preemption before this attempt's first batch stops at once and writes nothing: the next attempt starts
  where this one did (the previous checkpoint, or the beginning);
- a preemption that comes too late to matter (during the last epoch's end) lets the run finish.

What the checkpoint holds beyond Lightning's own (weights, optimizer, loop progress, callbacks' states):
``ExactState`` saves the random number generators (Python, NumPy, torch, CUDA) and, for a checkpoint in
the middle of an epoch, how many of the epoch's batches were done; the datamodule's sampler then leaves
those out of the epoch's order (``EpochShuffle.resume_at``), and the module's epoch loss sum travels in the
checkpoint too (``trainer/model.py``). ``metrics.csv`` is continued: the stopped attempt wrote every row up
to the stop, and the resumed one appends (``resume.keep_metrics_csv``); rows of steps a killed attempt did after
its checkpoint are cut first (``checkpoint_step``, ``resume.cut_metrics_csv``), as the resumed one does them again.

Lightning turns a SIGTERM into an exception at the next batch, or in the middle of a validation, wherever
that is. For a preemption that would be an unsafe point, so while fit trains, a SIGTERM that is a
preemption goes to the guard only (``_shield``); a cancel still reaches Lightning as before.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from typing_extensions import override

from trainer import resume
from trainer.cancel import CancelGuard, RunCancelled
from trainer.data import SWEDataModule

log = logging.getLogger(__name__)


def checkpoint_step(path: Path) -> int | None:
    """The global step (optimizer steps done) a checkpoint resumes from; None when it cannot be read. The
    file is mapped, not read: a large model's weights are not loaded for one number."""
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        return int(ckpt["global_step"])
    except Exception:  # an unreadable checkpoint fails the resume itself, with Lightning's own message
        log.warning("could not read the global step of %s: metrics.csv is kept as it is", path, exc_info=True)
        return None


def rng_states() -> dict[str, Any]:
    """The random generators' states, as plain types and tensors (checkpoints load with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, state, py_gauss = random.getstate()
    return {
        "python": {"version": version, "state": list(state), "gauss": py_gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        # Only where CUDA is in use already: asking would start it on a CPU run of a GPU machine.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }


def set_rng_states(states: dict[str, Any]) -> None:
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = states["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ExactState(L.Callback):
    """The state of a run that Lightning's checkpoint leaves out: the random generators, and where in its
    epoch a checkpoint written in the middle of one was written (``position``: ``(epoch, batches done)``,
    set by ``PreemptStop`` for the one save it makes there)."""

    def __init__(self, datamodule: SWEDataModule) -> None:
        self.datamodule = datamodule
        self.position: tuple[int, int] | None = None
        self._rng_on_train_start: dict[str, Any] | None = None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"position": list(self.position) if self.position else None, "rng": rng_states()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        position, rng = state_dict.get("position"), state_dict.get("rng")
        if position:
            epoch, batches_done = (int(v) for v in position)
            self.datamodule.resume_at(epoch, batches_done)
        if rng is None:
            return
        if position:
            # Saved after the epoch's loader was made (making one draws its worker seed from torch's
            # generator): set once the resumed attempt has made its own, right before training goes on.
            self._rng_on_train_start = rng
        else:
            # Saved at an epoch's end: the next epoch's loader, made from here on, draws as it would have.
            set_rng_states(rng)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng_on_train_start is not None:
            set_rng_states(self._rng_on_train_start)
            self._rng_on_train_start = None


class PreemptStop(L.Callback):
    """Stops a preempted run at its next safe point with the checkpoint that resumes it exactly (see the
    module docstring). ``stopped``: fit ended early for a preemption (the run is then not complete)."""

    def __init__(self, guard: CancelGuard, exact: ExactState, ckpt_dir: str | Path) -> None:
        self.guard, self.exact = guard, exact
        self.path = Path(ckpt_dir) / resume.LAST_CKPT
        self.saved = False
        self.stopped = False
        self._batches = 0  # completed by this attempt

    @property
    def _preempted(self) -> bool:
        return self.guard.received and self.guard.preempted

    @override
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _shield(trainer, self.guard)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _shield(trainer, self.guard)

    @override
    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if not self._preempted:
            return
        # Before this attempt's first batch nothing would be lost; on several devices every rank must stop
        # at the same batch, which only the epoch's end guarantees.
        if self.saved or (self._batches == 0 and trainer.world_size == 1):
            self.stopped = True
            raise RunCancelled(self.guard.reason)

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        batch_idx: int = args[-1]  # (outputs, batch, batch_idx)
        self._batches += 1
        if not self._preempted or self.saved or not _mid_epoch_safe(trainer, batch_idx + 1):
            return
        self.exact.position = (trainer.current_epoch, batch_idx + 1)
        try:
            trainer.save_checkpoint(self.path)
        finally:
            self.exact.position = None
        self.saved = True
        log.warning(
            "preempted: checkpoint written to %s (epoch %d, batch %d of %d, step %d); stopping",
            self.path,
            trainer.current_epoch,
            batch_idx + 1,
            trainer.num_training_batches,
            trainer.global_step,
        )

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        preempted = self._preempted and not self.saved
        if trainer.world_size > 1:  # every rank stops after the same epoch, or none does
            preempted = trainer.strategy.reduce_boolean_decision(preempted, all=False)
        if preempted and not _last_epoch(trainer):
            # Fit ends once this epoch is complete (its validation run, its metrics logged); the checkpoint
            # is written then (on_train_end), so the next attempt starts the next epoch afresh.
            trainer.should_stop = True
            self.stopped = True

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopped and not self.saved:
            trainer.save_checkpoint(self.path)
            self.saved = True
            log.warning(
                "preempted: checkpoint written to %s at the end of epoch %d (step %d)",
                self.path,
                trainer.current_epoch - 1,
                trainer.global_step,
            )

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self._preempted and not self.saved:
            # Stopped before its first batch (or while Lightning was still setting up): nothing was done
            # since the checkpoint this attempt started from, which stays as it is.
            log.warning("preempted before any training step of this attempt: no checkpoint written")


def _mid_epoch_safe(trainer: L.Trainer, done: int) -> bool:
    """Whether a checkpoint after the epoch's ``done``-th batch resumes exactly."""
    if trainer.world_size > 1:
        return False  # the distributed sampler shards the epoch's order: resume from the epoch's end
    if done % trainer.accumulate_grad_batches:
        return False  # gradients accumulated so far are not part of a checkpoint
    if done >= trainer.num_training_batches:
        return False  # the epoch's validation and end follow: stop after them
    every = trainer.val_check_batch
    # A validation follows this batch: a checkpoint written before it resumes without running it.
    return not (isinstance(every, int | float) and math.isfinite(every) and done % int(every) == 0)


def _last_epoch(trainer: L.Trainer) -> bool:
    if trainer.should_stop:
        return True
    if trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps:
        return True
    return trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs


def _shield(trainer: L.Trainer, guard: CancelGuard) -> None:
    """While fit runs, a SIGTERM that is a preemption goes to the guard only, so that Lightning does not
    stop the run at whatever batch or validation step comes next; a cancel still goes to Lightning's handler
    (which chains to the guard). Lightning puts back the handler it found when fit ends."""
    if threading.current_thread() is not threading.main_thread():
        return
    lightning_handler = signal.getsignal(signal.SIGTERM)
    if getattr(lightning_handler, "labrun_shield", False):
        return
    if guard.preempted:  # came before the shield (while Lightning set up): Lightning's flag is not ours
        trainer._signal_connector.received_sigterm = False

    def shield(signum: int, frame: FrameType | None) -> None:
        if resume.is_preemption(signum) or not callable(lightning_handler):
            guard.handle(signum, frame)
        else:
            lightning_handler(signum, frame)

    shield.labrun_shield = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, shield)
