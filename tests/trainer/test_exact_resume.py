"""A preemption loses nothing: a run stopped and resumed ends with the numbers of the same run left alone.

Fast: the parts (the sampler's resume position, the random generators' states, the epoch loss sum).
Slow: the real CLI on CPU with deterministic=true. One run is left alone; each other run of the same config
is preempted the way labrun preempts (SIGTERM to a preemptible run, no cancel marker) or killed, then
resumed as the launchers resume it (LABRUN_RESUME=1, the next LABRUN_ATTEMPT, the same run directory), and
its metrics.csv must equal the undisturbed one byte for byte.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from trainer_helpers import TINY, trainer_env

from trainer import resume
from trainer.data import EpochShuffle
from trainer.model import EpochMean

# 28 training samples in batches of 8: 4 batches (steps) per epoch, the last one of 4 samples.
RUN = [*TINY, "training.max_epochs=3", "deterministic=true"]
STEPS_PER_EPOCH = 4


def test_a_resumed_epoch_serves_exactly_the_samples_not_yet_seen():
    whole = EpochShuffle(28, seed=7)
    whole.set_epoch(1)
    order = list(whole)
    resumed = EpochShuffle(28, seed=7)
    resumed.resume_at(1, 16)
    resumed.set_epoch(1)
    assert list(resumed) == order[16:]
    assert list(resumed) == order  # once: a later pass over the epoch is whole again
    resumed.resume_at(1, 16)
    resumed.set_epoch(2)  # another epoch than the one to resume: untouched
    assert list(resumed) == list(EpochShuffle(28, seed=7).order(2))


def test_random_generators_come_back_as_they_were():
    from trainer.preempt import rng_states, set_rng_states

    random.random(), np.random.rand(), torch.rand(1), np.random.randn()  # a cached gaussian in numpy
    saved = rng_states()
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    set_rng_states(saved)
    again = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert expected[:3] == again[:3]
    assert torch.equal(expected[3], again[3])


def test_an_epoch_mean_split_by_a_checkpoint_is_the_same_number():
    losses = [torch.tensor(v) for v in (1.830675482749939, 1.7478395700454712, 1.7468538284301758, 1.83)]
    sizes = [8, 8, 8, 4]
    whole = EpochMean()
    for loss, n in zip(losses, sizes, strict=True):
        whole.add(loss, n)
    first = EpochMean()
    for loss, n in zip(losses[:2], sizes[:2], strict=True):
        first.add(loss, n)
    second = EpochMean.from_state(first.state_dict())
    for loss, n in zip(losses[2:], sizes[2:], strict=True):
        second.add(loss, n)
    assert torch.equal(whole.mean(), second.mean())


def test_rows_a_killed_attempt_wrote_after_its_checkpoint_are_cut_once_byte_for_byte(tmp_path):
    # Checkpoint at epoch 0's end (global step 4); killed at step 6, after writing epoch 1's steps 4 and 5.
    kept = (
        "epoch,step,train_loss,train_loss_epoch,val_loss\n"
        "0,0,1.830675482749939,,\n0,1,1.75,,\n0,2,1.74,,\n0,3,1.83,,\n"
        "0,3,,,2.0276196002960205\n0,3,,1.783700942993164,\n"  # epoch 0's end: written after its checkpoint
    )
    path = tmp_path / "metrics.csv"
    path.write_text(kept + "1,4,1.765,,\n1,5,1.74,,\n")
    assert resume.cut_metrics_csv(path, below_step=4) == 2
    assert path.read_text() == kept
    assert resume.cut_metrics_csv(path, below_step=4) == 0  # nothing twice
    assert path.read_text() == kept


def attempt(tmp: Path, log_dir: Path, name: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer", *RUN, f"log_dir={log_dir}", f"run_name={name}"],
        cwd=tmp,
        env={**trainer_env(tmp), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_dir(log_dir: Path, name: str) -> Path:
    (found,) = log_dir.glob(f"*/{name}")
    return found


def final(path: Path) -> tuple[str, dict]:
    """The run's metrics.csv (every per-step and per-epoch row) and its final metrics."""
    progress = json.loads((path / "progress.json").read_text())
    return (path / "metrics.csv").read_text(), progress["metrics"]


@pytest.fixture(scope="module")
def undisturbed(module_tmp) -> tuple[str, dict]:
    log_dir = module_tmp / "exact"
    out = attempt(module_tmp, log_dir, "alone")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    metrics_csv, metrics = final(run_dir(log_dir, "alone"))
    assert metrics_csv.count("\n") == 1 + 3 * (STEPS_PER_EPOCH + 2)  # header; steps, val and epoch rows
    return metrics_csv, metrics


def stopped(module_tmp: Path, name: str, **env: str) -> tuple[Path, str]:
    """The first attempt, preempted or killed by a test hook (``trainer/resume.py``)."""
    first = attempt(module_tmp, module_tmp / "exact", name, LABRUN_PREEMPTIBLE="1", **env)
    assert first.returncode in (75, -9), first.stdout[-3000:] + first.stderr[-3000:]
    return run_dir(module_tmp / "exact", name), first.stdout + first.stderr


def resumed(module_tmp: Path, path: Path) -> tuple[str, dict]:
    env = {"LABRUN_PREEMPTIBLE": "1", "LABRUN_RESUME": "1", "LABRUN_ATTEMPT": "2"}
    second = attempt(module_tmp, path.parent.parent, path.name, **env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    attempts = json.loads((path / "run.json").read_text())["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    return final(path)


@pytest.mark.slow
def test_preempted_in_the_middle_of_an_epoch_ends_exactly_as_if_left_alone(module_tmp, undisturbed):
    # SIGTERM once step 6 is done: the second of epoch 1's four batches.
    path, first = stopped(module_tmp, "mid", LABRUN_PREEMPT_AT_STEP="6")
    assert "epoch 1, batch 2 of 4, step 6" in first, first[-3000:]
    assert resumed(module_tmp, path) == undisturbed


@pytest.mark.slow
def test_preempted_during_validation_ends_exactly_as_if_left_alone(module_tmp, undisturbed):
    # A SIGTERM in epoch 1's validation, which Lightning alone would break off: the epoch finishes first.
    path, first = stopped(module_tmp, "val", LABRUN_PREEMPT_IN_VALIDATION="1")
    assert "at the end of epoch 1 (step 8)" in first, first[-3000:]
    assert resumed(module_tmp, path) == undisturbed


@pytest.mark.slow
def test_killed_before_any_checkpoint_restarts_and_ends_exactly_as_if_left_alone(module_tmp, undisturbed):
    # A victim that ignored the signal and was killed at step 2, before its first checkpoint (epoch 0's end).
    path, _ = stopped(module_tmp, "kill", LABRUN_KILL_AT_STEP="2")
    assert not list(path.glob("ckpt/*"))
    assert resumed(module_tmp, path) == undisturbed


@pytest.mark.slow
def test_a_preemption_during_the_last_validation_lets_the_run_complete(module_tmp, undisturbed):
    # Nothing would be left to resume: the run finishes and succeeds instead of asking to run again.
    log_dir = module_tmp / "exact"
    out = attempt(module_tmp, log_dir, "late", LABRUN_PREEMPTIBLE="1", LABRUN_PREEMPT_IN_VALIDATION="2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    path = run_dir(log_dir, "late")
    assert json.loads((path / "run.json").read_text())["status"] == "succeeded"
    assert final(path) == undisturbed


@pytest.mark.slow
def test_killed_after_a_checkpoint_resumes_and_ends_exactly_as_if_left_alone(module_tmp, undisturbed):
    # Killed at step 6, after epoch 0's checkpoint: epoch 1's first steps are done again, their rows once.
    path, _ = stopped(module_tmp, "kill-late", LABRUN_KILL_AT_STEP="6")
    assert (path / "ckpt" / "last.ckpt").is_file()
    assert "\n1,4," in (path / "metrics.csv").read_text()  # a row of a step after the checkpoint
    assert resumed(module_tmp, path) == undisturbed
