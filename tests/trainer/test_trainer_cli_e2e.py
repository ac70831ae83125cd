"""The real CLI, end to end on CPU: run directory layout, records, WandB's offline run, checkpoints,
learning, reproducibility, debug mode, refusing an existing directory, and SIGTERM.

The runs are shared between the assertions (module-scoped fixtures): each costs ~10 s, mostly imports.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from trainer_helpers import TINY, run_cli, trainer_env, wandb_records

pytestmark = pytest.mark.slow

RUN = [*TINY, "training.max_epochs=4", "training.lr=0.005"]
PROGRESS_KEYS = {
    "epoch",
    "max_epochs",
    "global_step",
    "total_steps",
    "fraction",
    "train_loss",
    "val_loss",
    "metrics",
    "updated_at",
    "phase",  # what the run is doing (trainer/heartbeat.py): "finishing" once fit ends
    "phase_done",
    "phase_total",
}


def only_dir(pattern_root: Path, pattern: str) -> Path:
    found = sorted(pattern_root.glob(pattern))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def runs(module_tmp):
    """Two runs with the same overrides: one named by the caller (as the service does), one by the scheme."""
    log_dir = module_tmp / "out"
    first = run_cli([*RUN, f"log_dir={log_dir}", "run_name=ra"], module_tmp)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = run_cli([*RUN, f"log_dir={log_dir}"], module_tmp)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    named = only_dir(log_dir, "*/ra")
    auto = only_dir(log_dir, "*/*_fno32x64_*")
    return {"log_dir": log_dir, "named": named, "auto": auto, "first": first, "second": second}


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_run_directory_layout(runs):
    run_dir = runs["named"]
    for name in [
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        ".hydra/hydra.yaml",
        "train.log",
        "ckpt/last.ckpt",
        "metrics.csv",
        "progress.json",
        "run.json",
    ]:
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert any(p.name != "last.ckpt" for p in (run_dir / "ckpt").glob("*.ckpt"))  # the val_loss-monitored one
    assert run_dir.parent.name == run_dir.parent.name[:10]
    assert len(run_dir.parent.name) == 10
    config = yaml.safe_load((run_dir / ".hydra/config.yaml").read_text())
    assert config["run_name"] == "ra"
    assert config["output_dir"] == str(run_dir)
    assert "hydra" not in config
    assert yaml.safe_load((run_dir / ".hydra/overrides.yaml").read_text())[-1] == "run_name=ra"
    hydra = yaml.safe_load((run_dir / ".hydra/hydra.yaml").read_text())["hydra"]
    assert hydra["runtime"]["choices"]["model"] == "fno"
    assert hydra["run"]["dir"] == str(run_dir)


def test_auto_name_follows_the_seed_scheme_without_bookkeeping_keys(runs):
    name = runs["auto"].name
    assert name.endswith("_fno32x64_" + "_".join(sorted(RUN)))
    assert "log_dir" not in name
    assert "run_name" not in name
    assert '"' not in name
    assert runs["auto"].parent.name == name[:10]


def test_logs_go_to_stdout_and_train_log(runs):
    log = (runs["named"] / "train.log").read_text()
    assert "epoch 4/4" in log
    assert "succeeded" in log
    assert "epoch 4/4" in runs["first"].stdout
    assert "loaded 32 samples from cache" in (runs["auto"] / "train.log").read_text()
    assert len(list((runs["log_dir"] / ".data_cache").glob("*.pt"))) == 1


def test_progress_json(runs):
    progress = json.loads((runs["named"] / "progress.json").read_text())
    assert set(progress) == PROGRESS_KEYS
    assert progress["epoch"] == progress["max_epochs"] == 4
    assert progress["global_step"] == progress["total_steps"] == 16
    assert progress["fraction"] == 1.0
    assert isinstance(progress["val_loss"], float)
    assert isinstance(progress["train_loss"], float)
    assert progress["metrics"]["val_loss"] == progress["val_loss"]
    assert progress["updated_at"].endswith("+00:00")
    assert progress["phase"] == "finishing"


def test_run_json(runs):
    record = json.loads((runs["named"] / "run.json").read_text())
    assert record["name"] == "ra"
    assert record["status"] == "succeeded"
    assert record["exception"] is None
    assert record["overrides"][-1] == "run_name=ra"
    assert record["config_name"] == "neuraloperator"
    assert record["seed"] == 42
    assert record["hostname"]
    assert record["devices"]
    assert all(
        record["versions"][p]
        for p in ("torch", "lightning", "neuraloperator", "torch-harmonics", "hydra-core", "wandb")
    )
    assert record["code_version"]["source"] == "git"
    assert len(record["code_version"]["commit"]) == 40
    assert len(record["code_version"]["patch_sha256"]) == 64  # the uncommitted changes, recorded
    assert isinstance(record["code_version"]["untracked"], list)
    assert record["start_time"] <= record["end_time"]


def test_wandb_offline_run_carries_the_name(runs):
    for run_dir in (runs["named"], runs["auto"]):
        records = list(wandb_records(only_dir(run_dir / "wandb", "offline-run-*/run-*.wandb")))
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        assert run.display_name == run_dir.name
        assert run.project == "sfno-shallowwater"
        exits = [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        assert exits == [0]  # the run was finished


def test_last_checkpoint_loads(runs):
    from trainer.model import OperatorModule

    module = OperatorModule.load_from_checkpoint(runs["named"] / "ckpt/last.ckpt", map_location="cpu")
    assert module(torch.zeros(1, 3, 32, 64)).shape == (1, 3, 32, 64)


def test_loss_falls(runs):
    val = [float(r["val_loss"]) for r in read_metrics(runs["named"]) if r["val_loss"]]
    assert len(val) == 4
    assert val[-1] < val[0]


def test_second_run_reproduces_the_metrics_exactly(runs):
    assert read_metrics(runs["named"]) == read_metrics(runs["auto"])


def test_existing_run_directory_is_an_error(runs, module_tmp):
    before = (runs["named"] / "run.json").read_bytes()
    out = run_cli([*RUN, f"log_dir={runs['log_dir']}", "run_name=ra"], module_tmp, timeout=60)
    assert out.returncode == 2
    assert "already exists" in out.stderr
    assert (runs["named"] / "run.json").read_bytes() == before


def test_debug_mode_writes_only_the_debug_dir(module_tmp):
    log_dir = module_tmp / "debug-out"
    other = log_dir / "debug" / "an-earlier-debug-run-maybe-still-going"
    other.mkdir(parents=True)
    (other / "train.log").touch()
    # Nothing outside <log_dir>/debug/<name> either: not in HOME (matplotlib's font cache), not in TMPDIR
    # (torch).
    home, tmp = module_tmp / "debug-home", module_tmp / "debug-tmp"
    home.mkdir()
    tmp.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "trainer", *TINY, f"log_dir={log_dir}", "debug=true", "debug_batches=2"],
        cwd=module_tmp,
        env={**trainer_env(module_tmp), "HOME": str(home), "TMPDIR": str(tmp)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert [p.name for p in log_dir.iterdir()] == ["debug"]  # no data cache, no dated dir
    assert sorted(str(p) for p in [*home.rglob("*"), *tmp.rglob("*")]) == []
    (debug,) = [p for p in (log_dir / "debug").iterdir() if p != other]
    assert (other / "train.log").exists()  # another debug run's folder is left alone
    assert (debug / "ckpt/last.ckpt").is_file()
    assert (debug / "train.log").is_file()
    assert list((debug / "wandb").glob("offline-run-*"))
    progress = json.loads((debug / "progress.json").read_text())
    assert progress["max_epochs"] == 1
    assert progress["global_step"] == 2


def test_sigterm_cancels_promptly(module_tmp):
    """The service's cancel: SIGTERM to the trainer's process group (DataLoader workers included)."""
    log_dir = module_tmp / "cancel-out"
    args = [
        *TINY,
        "num_workers=2",
        "data.num_examples=64",
        "training.max_epochs=1000",
        f"log_dir={log_dir}",
        "run_name=rc",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer", *args],
        cwd=module_tmp,
        env=trainer_env(module_tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        progress = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(log_dir.glob("*/rc/progress.json"))
            if found and json.loads(found[0].read_text())["global_step"] >= 10:
                progress = found[0]
                break
            time.sleep(0.2)
        assert progress is not None, "the run never got going"
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, output[-3000:]
    assert took < 20
    run_dir = progress.parent
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "cancelled"
    assert record["end_time"]
    records = list(wandb_records(only_dir(run_dir / "wandb", "offline-run-*/run-*.wandb")))
    assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [143]


def test_failure_is_recorded_and_wandb_finished(module_tmp):
    # A failure inside fit, after WandB started: the first checkpoint cannot be written (the config's own
    # bad values, such as training.lr=-1, are refused before the run exists).
    log_dir, blocker = module_tmp / "fail-out", module_tmp / "a-file"
    blocker.write_text("")
    args = [*TINY, "training.max_epochs=1", f"ckpt_dir={blocker}/ckpt", f"log_dir={log_dir}", "run_name=rf"]
    out = run_cli(args, module_tmp)
    assert out.returncode == 1
    run_dir = only_dir(log_dir, "*/rf")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed"
    assert "NotADirectoryError" in record["exception"]
    assert "Traceback" in (run_dir / "train.log").read_text()
    records = list(wandb_records(only_dir(run_dir / "wandb", "offline-run-*/run-*.wandb")))
    assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [1]


def test_multi_device_ranks_join_one_run(module_tmp):
    """devices=2: Lightning starts rank 1 by running the command again; it must join rank 0's run (same
    directory, no second run, no 'already exists'), as it will on a multi-GPU box. Here: DDP on CPU."""
    log_dir = module_tmp / "ddp-out"
    args = [*TINY, "devices=2", "strategy=ddp", "batch_size=4", "training.max_epochs=1", f"log_dir={log_dir}"]
    out = run_cli(args, module_tmp)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (day,) = [p for p in log_dir.iterdir() if p.name != ".data_cache"]
    (run_dir,) = list(day.iterdir())
    assert json.loads((run_dir / "run.json").read_text())["status"] == "succeeded"
    assert json.loads((run_dir / "progress.json").read_text())["global_step"] == 4  # 28 samples / (2 x 4)
    assert (run_dir / "ckpt/last.ckpt").is_file()


def test_a_preemption_during_validation_resumes_with_no_epoch_missing(module_tmp):
    """A preemption (SIGUSR1) that lands while an epoch is being validated lets the validation finish and
    stops at the epoch's end: the resumed attempt goes on with the next epoch, and every epoch has its
    validation. (Stopped inside the validation, the resumed run skipped that epoch's validation: a real
    Slurm requeue test caught it, tests/slurm/test_slurm_requeue.py.)"""
    log_dir = module_tmp / "preempt-out"
    several_val_batches = ["data.num_examples=64", "batch_size=4", "training.effective_batch_size=4"]
    args = [*TINY, *several_val_batches, "training.max_epochs=3", f"log_dir={log_dir}", "run_name=pv"]

    def attempt(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "trainer", *args],
            cwd=module_tmp,
            env={**trainer_env(module_tmp), **env},
            capture_output=True,
            text=True,
            timeout=300,
        )

    first = attempt(LABRUN_PREEMPT_IN_VALIDATION="1")
    assert first.returncode == 75, first.stdout[-3000:] + first.stderr[-3000:]  # checkpointed, run me again
    second = attempt(LABRUN_RESUME="1", LABRUN_ATTEMPT="2")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    with open(only_dir(log_dir, "*/pv") / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows if r["val_loss"]] == [0, 1, 2]
    steps = [int(r["step"]) for r in rows if r["train_loss"]]
    assert steps == sorted(steps), steps
    assert len(steps) == len(set(steps)), steps
