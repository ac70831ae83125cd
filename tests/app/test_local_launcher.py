"""LocalLauncher against real processes: exit codes that outlive the service, re-attach, pid reuse, cancel."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from app.launchers.base import LOST, LaunchError, LaunchSpec
from app.launchers.local import LocalLauncher
from app.statedir import StateDir


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "job.py"
    path.write_text("import os, sys, time\n" + body)
    return [sys.executable, str(path)]


def _spec(launcher: LocalLauncher, name: str, gpus=()) -> LaunchSpec:
    state = launcher.state.run(name)
    return LaunchSpec(
        name=name,
        trainer_args=["x=1"],
        gpus=tuple(gpus),
        output_dir=launcher.state.output_dir,
        state_dir=state,
        log_path=state / "log",
    )


def test_exit_code_env_and_log(tmp_path):
    command = _script(
        tmp_path, "print(sys.argv[1:], repr(os.environ['CUDA_VISIBLE_DEVICES']), os.getcwd())\nsys.exit(7)\n"
    )
    launcher = LocalLauncher(command, StateDir(tmp_path))
    handle = launcher.start(_spec(launcher, "r1", gpus=(2, 3)))
    outcome = launcher.wait("r1", handle, timeout=30)
    assert outcome.exit_code == 7
    assert outcome.reason == "exited with code 7"
    assert not outcome.succeeded
    assert launcher.poll("r1", handle) == outcome
    assert (tmp_path / ".labrun/runs/r1/log").read_text().strip() == f"['x=1'] '2,3' {tmp_path}"
    with pytest.raises(LaunchError, match="already started"):
        launcher.start(_spec(launcher, "r1"))  # never twice under one name


def test_a_new_service_reattaches_and_gets_the_true_exit_code(tmp_path):
    command = _script(
        tmp_path, "time.sleep(float(sys.argv[-1].split('=')[1]) if False else 0.6)\nsys.exit(3)\n"
    )
    first = LocalLauncher(command, StateDir(tmp_path))
    first.start(_spec(first, "r1"))
    second = LocalLauncher(command, StateDir(tmp_path))  # as after a restart: not the parent of the run
    handle = second.reattach("r1")
    assert handle is not None
    assert second.poll("r1", handle) is None
    started = time.monotonic()
    outcome = second.wait("r1", handle, timeout=30)  # pidfd: wakes when it ends, no polling
    assert outcome.exit_code == 3
    assert time.monotonic() - started < 5
    first.release("r1", handle)
    third = LocalLauncher(command, StateDir(tmp_path))  # ended while "down": the exit code is still there
    assert third.poll("r1", third.reattach("r1")).exit_code == 3
    assert third.reattach("never-started") is None


def test_a_reused_pid_is_not_mistaken_for_the_run(tmp_path):
    command = _script(tmp_path, "time.sleep(30)\n")
    launcher = LocalLauncher(command, StateDir(tmp_path))
    handle = launcher.start(_spec(launcher, "r1"))
    pid = handle.split(":")[0]
    stranger = LocalLauncher(command, StateDir(tmp_path))
    assert stranger.poll("r2", f"{pid}:1") == stranger.poll("r2", f"{pid}:1")  # wrong start time
    assert stranger.poll("r2", f"{pid}:1").reason == LOST
    launcher.cancel("r1", handle, grace_s=5)
    assert launcher.poll("r1", handle).exit_code == -15


def test_cancel_kills_the_whole_process_group_after_the_grace_period(tmp_path):
    command = _script(
        tmp_path,
        (
            "import signal, subprocess\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
            "open('grandchild', 'w').write(str(child.pid))\ntime.sleep(60)\n"
        ),
    )
    launcher = LocalLauncher(command, StateDir(tmp_path))
    handle = launcher.start(_spec(launcher, "r1"))
    deadline = time.monotonic() + 10
    while not (tmp_path / "grandchild").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int((tmp_path / "grandchild").read_text())
    started = time.monotonic()
    launcher.cancel("r1", handle, grace_s=0.5)
    assert 0.4 < time.monotonic() - started < 5
    assert launcher.poll("r1", handle).exit_code == -9
    time.sleep(0.1)
    stat = Path(f"/proc/{grandchild}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in "ZX"


def test_a_kill_after_the_grace_period_says_so_and_forget_clears_it_for_the_next_attempt(tmp_path):
    """The cancel's marks belong to one attempt: after ``forget`` the run starts again, and a SIGKILL that
    labrun did not send is not blamed on a cancel of the attempt before."""
    command = _script(
        tmp_path,
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nopen('up', 'w').close()\n"
        "time.sleep(60)\n",
    )
    launcher = LocalLauncher(command, StateDir(tmp_path))
    handle = launcher.start(_spec(launcher, "r1"))
    _wait_for(tmp_path / "up")
    launcher.cancel("r1", handle, grace_s=0.5)
    assert launcher.poll("r1", handle).reason == (
        "killed by SIGKILL after the cancel's grace period (0.5 s): it did not stop on SIGTERM"
    )
    files = launcher.files("r1")
    assert files.cancel_marker.exists()
    assert files.killed_after_grace.exists()
    launcher.release("r1", handle)
    launcher.forget("r1")
    assert not any(
        p.exists() for p in (files.pid, files.exit_code, files.cancel_marker, files.killed_after_grace)
    )
    (tmp_path / "up").unlink()
    handle = launcher.start(_spec(launcher, "r1"))  # the next attempt, under the same name
    _wait_for(tmp_path / "up")
    trainer = int(files.child_pid.read_text().split()[0])
    os.kill(trainer, signal.SIGKILL)  # as the kernel's out-of-memory killer does
    outcome = launcher.wait("r1", handle, timeout=30)
    assert outcome.exit_code == -9, outcome
    assert "not by labrun" in outcome.reason, outcome


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_process_that_escapes_the_group_holding_the_output_does_not_hold_up_the_outcome(tmp_path):
    """The trainer's output is a pipe the wrapper copies into the log (its bound, issue 20): a process
    that left the trainer's group and keeps the pipe open must not keep the run from ending."""
    command = _script(
        tmp_path,
        "import subprocess\nprint('before', flush=True)\n"
        "subprocess.Popen(['sleep', '30'], start_new_session=True)\n",  # inherits stdout: the pipe
    )
    launcher = LocalLauncher(command, StateDir(tmp_path))
    started = time.monotonic()
    handle = launcher.start(_spec(launcher, "r1"))
    outcome = launcher.wait("r1", handle, timeout=25)
    assert outcome is not None, outcome
    assert outcome.succeeded, outcome
    assert time.monotonic() - started < 15
    assert launcher.files("r1").log.read_text() == "before\n"
