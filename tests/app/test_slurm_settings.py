"""``LABRUN_SLURM_*`` (app/launchers/slurm.py, SlurmSettings): read from the environment once, shell words
or JSON lists where a list is meant, and a bad value refused with a message that names it. No Slurm is
needed to read settings: these run everywhere."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.launchers.slurm import SlurmSettings


def test_lists_are_shell_words_or_json(monkeypatch):
    monkeypatch.setenv("LABRUN_SLURM_SBATCH_OPTIONS", "--gres=gpu:1 --constraint 'a100|h100'")
    monkeypatch.setenv("LABRUN_SLURM_TRAINER_COMMAND", '["/opt/venv/bin/python", "-m", "trainer"]')
    monkeypatch.setenv("LABRUN_SLURM_TIME_LIMIT", "2:00:00")
    settings = SlurmSettings()
    assert settings.sbatch_options == ["--gres=gpu:1", "--constraint", "a100|h100"]
    assert settings.trainer_command == ["/opt/venv/bin/python", "-m", "trainer"]
    assert settings.time_limit == "2:00:00"
    assert settings.requeue is True


def test_defaults_without_any_setting(monkeypatch):
    for key in ("SBATCH_OPTIONS", "TRAINER_COMMAND", "PARTITION", "CPUS_PER_TASK"):
        monkeypatch.delenv(f"LABRUN_SLURM_{key}", raising=False)
    settings = SlurmSettings()
    assert settings.sbatch_options == []
    assert settings.trainer_command is None
    assert settings.partition is None
    assert settings.cpus_per_task == 4


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("SBATCH_OPTIONS", "--output=/tmp/x.log", "labrun sets this option itself"),
        ("SBATCH_OPTIONS", "-J other", "labrun sets this option itself"),
        ("CPUS_PER_TASK", "0", "must be at least 1"),
        ("SIGNAL_BEFORE_S", "-5", "must be at least 1"),
        ("POLL_INTERVAL_S", "0", "must be more than 0 seconds"),
        ("COMMAND_TIMEOUT_S", "-1", "must be more than 0 seconds"),
        ("CPUS_PER_TASK", "four", "cpus_per_task"),
    ],
)
def test_a_bad_value_is_refused_with_its_name(monkeypatch, key, value, message):
    monkeypatch.setenv(f"LABRUN_SLURM_{key}", value)
    with pytest.raises(ValidationError, match=message) as caught:
        SlurmSettings()
    assert key.lower() in str(caught.value)


def test_priority_classes_map_to_partitions_and_qos(monkeypatch, tmp_path):
    from app.launchers.base import LaunchSpec
    from app.launchers.slurm import SlurmLauncher
    from app.statedir import StateDir

    monkeypatch.setenv("LABRUN_SLURM_PARTITION", "main")
    monkeypatch.setenv("LABRUN_SLURM_PARTITION_HIGH", "urgent")
    monkeypatch.setenv("LABRUN_SLURM_QOS_LOW", "scavenger")
    launcher = SlurmLauncher(SlurmSettings(), StateDir(tmp_path), ["trainer"])

    def args(priority: str) -> list[str]:
        spec = LaunchSpec("r", [], (), tmp_path, tmp_path / "s", tmp_path / "log", priority=priority)
        return [a for a in launcher.sbatch_args(spec) if a.startswith(("--partition", "--qos"))]

    assert args("high") == ["--partition=urgent"]
    assert args("normal") == ["--partition=main"]  # no class of its own: the default partition
    assert args("low") == ["--partition=main", "--qos=scavenger"]


def test_a_runs_own_time_limit_becomes_the_jobs_time_when_it_ends_first(monkeypatch, tmp_path):
    from app.launchers.base import LaunchSpec
    from app.launchers.slurm import SlurmLauncher, slurm_seconds
    from app.launchers.slurm_wrapper import OWN_TIME_LIMIT_ENV
    from app.statedir import StateDir

    assert [slurm_seconds(t) for t in ("90", "10:30", "1:00:00", "1-00:00:00", "2-3", "1-2:30")] == [
        5400,
        630,
        3600,
        86400,
        183600,
        95400,
    ]
    assert slurm_seconds("UNLIMITED") is None
    monkeypatch.setenv("LABRUN_SLURM_TIME_LIMIT", "2:00:00")
    monkeypatch.setenv("LABRUN_SLURM_SIGNAL_BEFORE_S", "120")
    launcher = SlurmLauncher(SlurmSettings(), StateDir(tmp_path), ["trainer"])

    def job(limit: float | None) -> tuple[str, str | None]:
        spec = LaunchSpec("r", [], (), tmp_path, tmp_path / "s", tmp_path / "log", time_limit_s=limit)
        (time,) = [a for a in launcher.sbatch_args(spec) if a.startswith("--time=")]
        return time, launcher._env(spec).get(OWN_TIME_LIMIT_ENV)

    assert job(None) == ("--time=2:00:00", None)  # the site's
    assert job(3600) == ("--time=62", "1")  # its own: 60 min left, plus the USR1's 2 min before it
    assert job(30) == ("--time=3", "1")  # rounded up to whole minutes
    assert job(2 * 3600) == ("--time=2:00:00", None)  # the site's ends first: Slurm's requeue as before
