"""Settings: LABRUN_* variables, defaults, and bad values that fail at start-up with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.core.config import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults(monkeypatch):
    for var in ("HOST", "PORT", "OUTPUT_DIR", "LAUNCHER", "GPUS", "MAX_CPU_RUNS", "TRAINER_COMMAND"):
        monkeypatch.delenv(f"LABRUN_{var}", raising=False)
    settings = load_settings()
    assert (settings.host, settings.port, settings.launcher, settings.max_cpu_runs) == (
        "127.0.0.1",
        8000,
        "local",
        1,
    )
    assert settings.output_dir == Path("./outputs").resolve()
    assert settings.trainer_command == [sys.executable, "-m", "trainer"]


def test_environment_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv("LABRUN_GPUS", "0, 2,3")
    monkeypatch.setenv("LABRUN_MAX_CPU_RUNS", "4")
    monkeypatch.setenv("LABRUN_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("LABRUN_TRAINER_COMMAND", "python3 -m trainer")
    monkeypatch.setenv("LABRUN_LAUNCHER", "Docker")
    settings = load_settings()
    assert settings.gpus == (0, 2, 3)
    assert settings.gpu_inventory() == (0, 2, 3)
    assert settings.max_cpu_runs == 4
    assert settings.output_dir == tmp_path / "out"
    assert settings.trainer_command == ["python3", "-m", "trainer"]
    assert settings.launcher == "docker"
    monkeypatch.setenv("LABRUN_GPUS", "")
    assert load_settings().gpu_inventory() == ()
    monkeypatch.setenv("LABRUN_TRAINER_COMMAND", '["/opt/py", "-m", "trainer"]')
    assert load_settings().trainer_command == ["/opt/py", "-m", "trainer"]


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("PORT", "99999", "LABRUN_PORT"),
        ("PORT", "http", "LABRUN_PORT"),
        ("LAUNCHER", "slurmish", "unknown launcher 'slurmish'; choose one of: local, docker"),
        ("GPUS", "0,zero", "expected GPU indices"),
        ("GPUS", "1,1", "distinct"),
        ("MAX_CPU_RUNS", "0", "LABRUN_MAX_CPU_RUNS"),
        ("TRAINER_COMMAND", "[]", "non-empty"),
        ("CANCEL_GRACE_S", "-1", "LABRUN_CANCEL_GRACE_S"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(monkeypatch, var, value, message):
    monkeypatch.setenv(f"LABRUN_{var}", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert message in str(caught.value)


def test_service_refuses_to_start_with_bad_settings(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "LABRUN_PORT": "0x",
        "LABRUN_LAUNCHER": "nope",
        "LABRUN_OUTPUT_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "LABRUN_PORT" in result.stderr
    assert "LABRUN_LAUNCHER" in result.stderr
    assert "Traceback" not in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {"PATH": "/usr/bin:/bin", "LABRUN_OUTPUT_DIR": str(blocker / "sub")}
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "LABRUN_OUTPUT_DIR" in result.stderr


def test_a_launchers_own_bad_settings_also_stop_the_start(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "LABRUN_LAUNCHER": "docker",
        "LABRUN_OUTPUT_DIR": str(tmp_path),
        "LABRUN_DOCKER_PIDS_LIMIT": "not-a-number",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "LABRUN_DOCKER_" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("blocked", ["service.lock", "runs.db"])
def test_an_output_dir_the_service_cannot_use_stops_the_start_with_a_clear_message(tmp_path, blocked):
    """E.g. a colleague's ./outputs (not writable to this user); here a directory where a file must go,
    which fails the same way for root too."""
    (tmp_path / ".labrun" / blocked).mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "LABRUN_OUTPUT_DIR": str(tmp_path), "LABRUN_GPUS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "LABRUN_OUTPUT_DIR" in result.stderr
    assert blocked in result.stderr
    assert "Traceback" not in result.stderr
