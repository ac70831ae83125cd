"""POST /runs/{name}/resume on Slurm: a failed or cancelled run goes back to the queue as its next attempt and
runs as a new Slurm job (the last attempt's job id, exit code and cancel marker are forgotten), with the
fake trainer; and the forgotten job is never found again as the run's."""

from __future__ import annotations

import json
import sys

import pytest
from slurm_helpers import ended_state, job_id, slurm_service, starts, wait_until

from app.launchers.base import LaunchSpec, Outcome
from app.launchers.slurm import SlurmLauncher, SlurmSettings
from app.statedir import StateDir

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.mark.usefixtures("slurm")
def test_a_failed_run_resumes_as_a_new_job(output_dir):
    svc = slurm_service(output_dir).start()
    try:
        name = svc.submit(["+extra.fake_fail_once=3"])["name"]
        failed = svc.wait_for(name, timeout=60)
        assert (failed["status"], failed["exit_code"], failed["attempts"]) == ("failed", 3, 1), failed
        first_job = job_id(output_dir, name)
        ckpt = output_dir / failed["run_dir"] / "ckpt" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"a checkpoint")  # what the trainer leaves when it saves one
        resumed = svc.http.post(f"/runs/{name}/resume")
        assert resumed.status_code == 200, resumed.text
        done = svc.wait_for(name, timeout=90)
        assert (done["status"], done["exit_code"], done["attempts"]) == ("succeeded", 0, 2), done
        assert job_id(output_dir, name) != first_job  # a new job, not the last attempt's
        assert wait_until(lambda: starts(output_dir).count(name) == 2, 10, "both attempts' starts")
        earlier = svc.http.get(f"/runs/{name}/attempts").json()["attempts"]
        assert [(a["attempt"], a["status"], a["exit_code"]) for a in earlier] == [(1, "failed", 3)]
        # the job of the resumed attempt numbers it as the run's second (LABRUN_ATTEMPT for its trainer)
        lines = (output_dir / ".labrun" / "runs" / name / "attempts").read_text().splitlines()
        assert [json.loads(line)["attempt"] for line in lines if '"start"' in line] == [1, 2]
    finally:
        svc.stop()


@pytest.mark.usefixtures("slurm")
def test_a_cancelled_run_resumes_and_is_not_taken_for_cancelled_again(output_dir):
    """The cancel marker of the last attempt must not survive: the resumed attempt's trainer would read a
    preemption's SIGTERM as a cancel, and its job would not be requeued."""
    svc = slurm_service(output_dir).start()
    try:
        name = svc.submit(["+extra.fake_sleep=120"])["name"]
        svc.wait_for(name, {"running"}, timeout=60)
        wait_until(lambda: name in starts(output_dir), 60, "the trainer to start")
        assert svc.http.post(f"/runs/{name}/cancel").status_code == 200
        cancelled = svc.wait_for(name, timeout=30)
        assert cancelled["status"] == "cancelled", cancelled
        state = output_dir / ".labrun" / "runs" / name
        ckpt = output_dir / cancelled["run_dir"] / "ckpt" / "last.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_bytes(b"a checkpoint")
        resumed = svc.http.post(f"/runs/{name}/resume")
        assert resumed.status_code == 200, resumed.text
        svc.wait_for(name, {"running"}, timeout=60)
        wait_until(lambda: starts(output_dir).count(name) == 2, 60, "the second attempt to start")
        assert not (state / "cancel_requested").exists()
        run = svc.http.get(f"/runs/{name}").json()
        assert (run["status"], run["attempts"]) == ("running", 2), run
        assert svc.http.post(f"/runs/{name}/cancel").status_code == 200
        assert svc.wait_for(name, timeout=30)["status"] == "cancelled"
    finally:
        svc.stop()


@pytest.mark.usefixtures("slurm")
def test_the_job_of_a_forgotten_attempt_is_never_taken_for_the_runs_job(output_dir):
    """Slurm lists an ended job for a while (MinJobAge): a restart between a resume and its new job's start
    finds the run by name in squeue, and must not adopt the last attempt's job (whose end it would record
    for the new attempt)."""
    state = StateDir(output_dir)
    name = "resumed-run"
    launcher = SlurmLauncher(
        SlurmSettings(cpus_per_task=1, poll_interval_s=0.5),
        state,
        [sys.executable, "-c", "raise SystemExit(3)"],
    )
    spec = LaunchSpec(name, [], (), output_dir, state.run(name), state.log(name))
    job = launcher.start(spec)
    assert launcher.wait(name, job, timeout=60) == Outcome(3, "exited with code 3")
    state.files(name).job_id.unlink()  # as if the service had died before writing it: found by name
    assert launcher.reattach(name) == job
    launcher.forget(name)
    assert ended_state(job) == "FAILED"  # still listed
    assert launcher.reattach(name) is None
    again = launcher.start(spec)
    assert again != job
    assert launcher.reattach(name) == again
    assert launcher.wait(name, again, timeout=60) == Outcome(3, "exited with code 3")
