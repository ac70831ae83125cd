"""Small pieces of a run's lifecycle, in process: cancellation, the run directory, WandB's mode."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from trainer import rundir
from trainer.cancel import CancelGuard, RunCancelled


@pytest.fixture
def guard():
    g = CancelGuard().install()
    yield g
    g.uninstall()


def _sigterm_and_wait() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises before this returns


def test_sigterm_outside_fit_stops_at_once(guard):
    with pytest.raises(RunCancelled, match="SIGTERM"):
        _sigterm_and_wait()
    assert guard.received
    assert guard.exit_code == 143


def test_sigterm_inside_fit_is_recorded_then_raised_on_exit(guard):
    def inside_fit() -> None:
        with guard.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert guard.received  # recorded, not raised: Lightning stops at the next batch

    with pytest.raises(RunCancelled):
        inside_fit()
    assert guard.exit_code == 143


def test_lightnings_sigterm_exception_becomes_a_cancel(guard):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    def lightning_stops() -> None:
        with guard.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            raise SIGTERMException

    with pytest.raises(RunCancelled):
        lightning_stops()


def test_a_dataloader_worker_ended_by_sigterm_is_a_cancel_even_before_our_handler_ran(guard):
    """A group SIGTERM: torch's SIGCHLD handler may raise about the dead worker before the SIGTERM reaches us."""
    with pytest.raises(RunCancelled), guard.deferred():
        raise RuntimeError("DataLoader worker (pid 15423) is killed by signal: Terminated. ")
    assert guard.received
    assert guard.exit_code == 143


def test_other_errors_inside_fit_stay_failures(guard):
    with pytest.raises(RuntimeError, match="Killed"), guard.deferred():
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Killed. ")
    assert not guard.received


def test_sigint_exits_130(guard):
    with pytest.raises(RunCancelled, match="SIGINT"), guard.deferred():
        os.kill(os.getpid(), signal.SIGINT)
    assert guard.exit_code == 130


def test_signals_during_cleanup_are_ignored(guard, caplog):
    """A SIGTERM while the run writes its final records reaches our handler, which logs it and goes on."""
    guard.cleaning_up()
    with caplog.at_level("WARNING", logger="trainer.cancel"):
        os.kill(os.getpid(), signal.SIGTERM)  # raising here would fail the test
        time.sleep(0.05)  # pending handlers run here
    assert signal.getsignal(signal.SIGTERM) == guard._handle
    assert "SIGTERM again: already stopping" in caplog.text
    assert not guard.received  # not recorded as a cancel: the run's outcome stays what it was


def test_uninstall_restores_the_previous_handlers():
    before = signal.getsignal(signal.SIGTERM)
    CancelGuard().install().uninstall()
    assert signal.getsignal(signal.SIGTERM) == before


def test_run_directory_is_created_once(tmp_path):
    target = tmp_path / "2026-01-01" / "run"
    assert rundir.create(str(target)) == target
    assert target.is_dir()
    with pytest.raises(rundir.RunDirExists, match="already exists"):
        rundir.create(str(target))


def test_a_run_directory_made_for_the_run_is_taken_while_empty(tmp_path):
    """The Docker launcher makes (and mounts) the run's directory before the trainer starts."""
    target = tmp_path / "2026-01-01" / "run"
    target.mkdir(parents=True)
    with pytest.raises(rundir.RunDirExists):  # made for another run
        rundir.create(str(target), made_for_run=tmp_path / "2026-01-01" / "other")
    assert rundir.create(str(target), made_for_run=target) == target
    (target / "run.json").write_text("{}")
    with pytest.raises(rundir.RunDirExists):  # a run's files are there: never shared
        rundir.create(str(target), made_for_run=target)


def test_two_debug_runs_at_once_never_share_or_wipe_a_folder(tmp_path):
    """The seed's debug runs all used (and first deleted) <log_dir>/debug: two at once wiped each other."""
    from trainer_helpers import TINY

    from trainer import plan as run_plan

    plans = [
        run_plan.plan_run([*TINY, f"log_dir={tmp_path}", "debug=true", f"seed={seed}"]) for seed in (1, 2)
    ]
    dirs = [run_plan.claim(p, lambda c: rundir.create(c.job.output_dir))[1] for p in plans]
    (dirs[0] / "checkpoint").touch()
    assert dirs[0] != dirs[1]
    assert all(d.parent == tmp_path / "debug" for d in dirs)
    assert (dirs[0] / "checkpoint").exists()  # the second debug run left the first one's files alone


@pytest.mark.parametrize(
    ("env", "debug", "mode"),
    [
        ({}, False, "offline"),
        ({"WANDB_API_KEY": "k"}, False, "online"),
        ({"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}, False, "offline"),
        ({"WANDB_MODE": "disabled"}, False, "disabled"),
        ({"WANDB_API_KEY": "k"}, True, "offline"),
        ({"WANDB_MODE": "online"}, True, "offline"),
        ({"WANDB_MODE": "disabled"}, True, "disabled"),
    ],
)
def test_wandb_mode(env, debug, mode):
    assert rundir.wandb_mode(debug, env) == mode


def test_generated_name_taken_in_the_same_second_gets_a_suffix(tmp_path, monkeypatch):
    import datetime as dt

    from trainer_helpers import TINY

    from trainer import cli, naming

    real = naming.make_run_name
    fixed = dt.datetime(2026, 1, 2, 3, 4, 5)
    monkeypatch.setattr(
        naming,
        "make_run_name",
        lambda m, d, o, when=None, suffix="": real(m, d, o, when=fixed, suffix=suffix),  # noqa: ARG005 - its signature
    )
    started: list[tuple[Path, str]] = []
    monkeypatch.setattr(
        cli, "execute", lambda _job, _hydra, run_dir, name, *_: started.append((run_dir, name)) or 0
    )
    args = [*TINY, f"log_dir={tmp_path}"]
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    (first, a), (second, b) = started
    assert b == a + "_r2"
    assert first.is_dir()
    assert second.is_dir()
    assert first != second
    # A name the caller chose is never changed: taken means an error.
    assert cli.main([*args, "run_name=2026-01-02_mine"]) == 0
    assert cli.main([*args, "run_name=2026-01-02_mine"]) == 2


def test_run_record_names_the_image_and_the_baked_code_version(tmp_path, monkeypatch):
    import json

    from trainer import provenance

    monkeypatch.setenv("LABRUN_IMAGE_ID", "sha256:abc")
    monkeypatch.setenv("LABRUN_CODE_VERSION", "1a2b3c")
    assert provenance.code_version(tmp_path) == {
        "source": "env",
        "commit": "1a2b3c",
        "dirty": None,
    }  # no .git
    record = provenance.RunManifest(
        tmp_path / "run.json", name="n", overrides=["a=1"], config_name="c", seed=1
    )
    record.write()
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "running"
    record.finish("failed", "ValueError: x")
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["image"] == "sha256:abc"
    assert data["status"] == "failed"
    assert data["end_time"]
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind


def test_sigterm_while_the_run_directory_is_being_set_up_still_writes_run_json(tmp_path):
    """A cancel that lands right after the run directory exists (while run.json's provenance is gathered:
    git, package versions) must not leave a directory without run.json: the run ends as cancelled."""
    import json
    import subprocess
    import sys

    from trainer_helpers import TINY, trainer_env

    script = (
        "import os, signal, sys, time\n"
        "from trainer import cli, provenance\n"
        "real = provenance.code_version\n"
        "def slow_code_version(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.5)\n"
        "    return real(*a, **k)\n"
        "provenance.code_version = slow_code_version\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *TINY, f"log_dir={tmp_path}", "run_name=early"],
        cwd=tmp_path,
        env=trainer_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 143, done.stdout[-2000:] + done.stderr[-2000:]
    [run_dir] = tmp_path.glob("*/early")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "cancelled"
    assert record["end_time"]
    assert record["code_version"]


def test_progress_json_is_final_when_fit_ends_with_an_exception(tmp_path):
    """A failed or cancelled fit ends between the periodic writes: progress.json must still show the last
    step, not whatever it said up to ``every_s`` seconds before."""
    import json
    from types import SimpleNamespace

    from trainer.callbacks import ProgressFile

    trainer = SimpleNamespace(
        is_global_zero=True,
        callback_metrics={"train_loss": 0.5},
        current_epoch=0,
        max_epochs=10,
        global_step=3,
        sanity_checking=False,
    )
    progress = ProgressFile(tmp_path / "progress.json", every_s=3600)
    progress.write(trainer)
    trainer.global_step, trainer.callback_metrics = 7, {"train_loss": 0.25}
    progress.on_train_batch_end(trainer)  # within every_s: not written
    progress.on_exception(trainer, None, RunCancelled("cancelled by SIGTERM"))
    written = json.loads((tmp_path / "progress.json").read_text())
    assert written["global_step"] == 7
    assert written["train_loss"] == 0.25


def test_cleanup_is_not_broken_off_by_a_dataloaders_sigchld_handler(guard):
    """torch's DataLoader raises from its SIGCHLD handler when a worker died, and a process-group SIGTERM
    ends the workers too: while the run finishes WandB and writes run.json, that must not break in (it left
    cancelled runs with WandB exit code 0 instead of 143)."""

    calls: list[int] = []

    def dataloader_handler(signum, _frame):
        calls.append(signum)
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    previous = signal.signal(signal.SIGCHLD, dataloader_handler)
    try:
        guard.cleaning_up()
        after_cleanup = signal.getsignal(signal.SIGCHLD)
        os.kill(os.getpid(), signal.SIGCHLD)
        time.sleep(0.05)  # pending handlers run here
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert after_cleanup == signal.SIG_DFL
    assert calls == []  # the DataLoader's handler never ran


def test_inside_a_slurm_job_lightning_does_not_requeue_on_its_own(monkeypatch):
    """The job wrapper requeues a preempted run (app/launchers/slurm_wrapper.py); Lightning's auto-requeue
    on SIGUSR1 would requeue it a second time."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from trainer.train import cluster_plugins

    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    assert cluster_plugins() == []  # not in a job: Lightning picks its own environment
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "labrun-run")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    (plugin,) = cluster_plugins()
    assert isinstance(plugin, SLURMEnvironment)
    assert plugin.auto_requeue is False
