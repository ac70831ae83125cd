"""The slurm launcher against a real Slurm (.ci/engines/slurm.sh), through the service as a process, with
the fake trainer: submit, fail, cancel (running and pending), kill -9 of the service, a 2-GPU request."""

from __future__ import annotations

import subprocess
import time

import pytest
from slurm_helpers import (
    ended_state,
    job_id,
    jobs_named,
    show_job,
    slurm_service,
    squeue_state,
    starts,
    wait_until,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture
def service(slurm, output_dir):
    del slurm  # asked for first: no Slurm is a skip (in CI, a failure) before a service starts
    svc = slurm_service(output_dir).start()
    yield svc
    svc.stop()


def test_a_run_is_one_job_named_after_it_and_succeeds_with_its_exit_code(service, output_dir):
    run = service.submit(["+extra.fake_sleep=3"])
    name = run["name"]
    running = service.wait_for(name, {"running", "succeeded"}, timeout=60)
    assert running["status"] == "running"
    job = show_job(job_id(output_dir, name))
    assert job["JobName"] == name
    assert job["WorkDir"] == str(output_dir)
    assert job["StdOut"] == str(output_dir / ".labrun" / "runs" / name / "log")
    done = service.wait_for(name, timeout=60)
    assert done["status"] == "succeeded", done
    assert done["exit_code"] == 0, done
    assert ended_state(job_id(output_dir, name)) == "COMPLETED"
    assert f"fake trainer {name}: line 1" in service.http.get(f"/runs/{name}/logs").text
    assert (output_dir / run["run_dir"] / "progress.json").exists()
    assert service.http.get("/healthz").status_code == 200


def test_a_failing_run_fails_with_its_exit_code_and_log_tail(service):
    name = service.submit(["+extra.fake_exit=3"])["name"]
    done = service.wait_for(name, timeout=60)
    assert done["status"] == "failed", done
    assert done["exit_code"] == 3, done
    assert done["reason"] == "exited with code 3"
    assert "failing with exit code 3" in done["log_tail"]


def test_cancelling_a_running_job_ends_it_within_the_grace_period(service, output_dir):
    name = service.submit(["+extra.fake_sleep=120"])["name"]
    service.wait_for(name, {"running"}, timeout=60)
    wait_until(lambda: name in starts(output_dir), 60, "the trainer to start")
    job = job_id(output_dir, name)
    assert squeue_state(job) == "RUNNING"
    started = time.monotonic()
    answer = service.http.post(f"/runs/{name}/cancel")
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    run = service.wait_for(name, timeout=30)
    assert run["status"] == "cancelled", run
    assert took < 5 + 3, took  # LABRUN_CANCEL_GRACE_S=5: the fake trainer ends on SIGTERM at once
    assert "SIGTERM" in run["reason"], run["reason"]
    assert wait_until(lambda: squeue_state(job) not in ("RUNNING", "COMPLETING"), 30, "the job to end")


def test_cancelling_a_job_that_ignores_sigterm_kills_it_after_the_grace(service, output_dir):
    name = service.submit(["+extra.fake_sleep=120", "+extra.fake_on_term=ignore"])["name"]
    service.wait_for(name, {"running"}, timeout=60)
    wait_until(lambda: name in starts(output_dir), 60, "the trainer to start")
    started = time.monotonic()
    assert service.http.post(f"/runs/{name}/cancel").status_code == 200
    run = service.wait_for(name, timeout=60)
    assert run["status"] == "cancelled", run
    assert "grace period" in run["reason"], run["reason"]
    assert time.monotonic() - started >= 5


def test_cancelling_a_pending_job_cancels_it(service, output_dir):
    blocker = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--exclusive",
            "-o",
            "/dev/null",
            "-J",
            "labrun-test-blocker",
            "--wrap",
            "sleep 300",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        wait_until(lambda: squeue_state(blocker) == "RUNNING", 30, "the blocker to run")
        name = service.submit(["+extra.fake_sleep=1"])["name"]
        service.wait_for(name, {"running"}, timeout=60)  # submitted to Slurm: running as far as labrun goes
        job = job_id(output_dir, name)
        wait_until(lambda: squeue_state(job) == "PENDING", 30, "the job to be pending (PD)")
        assert service.http.post(f"/runs/{name}/cancel").status_code == 200
        run = service.wait_for(name, timeout=30)
        assert run["status"] == "cancelled", run
        assert ended_state(job) == "CANCELLED"
        assert name not in starts(output_dir)
    finally:
        subprocess.run(["scancel", blocker], check=False)


@pytest.mark.usefixtures("slurm")
def test_kill9_of_the_service_while_jobs_run_and_one_ends(output_dir):
    svc = slurm_service(output_dir).start()
    try:
        long_runs = [svc.submit([f"+extra.fake_sleep={60 + i}"])["name"] for i in range(2)]
        short = svc.submit(["+extra.fake_sleep=4", "+extra.fake_exit=7"])["name"]
        for name in [*long_runs, short]:
            svc.wait_for(name, {"running"}, timeout=60)
        wait_until(
            lambda: all(n in starts(output_dir) for n in [*long_runs, short]), 60, "all three to start"
        )
        svc.kill9()
        state = output_dir / ".labrun" / "runs" / short / "exit_code"
        wait_until(state.exists, 60, "the short run to end while the service is down")
        svc.start()
        done = svc.wait_for(short, timeout=30)
        assert done["status"] == "failed", done
        assert done["exit_code"] == 7, done
        for name in long_runs:
            assert svc.http.get(f"/runs/{name}").json()["status"] == "running"
            assert svc.http.post(f"/runs/{name}/cancel").status_code == 200
        for name in [*long_runs, short]:
            assert len(jobs_named(name)) == 1, name  # submitted once
            assert starts(output_dir).count(name) == 1, name  # started once
    finally:
        svc.stop()


def test_a_two_gpu_run_asks_slurm_for_two_gpus(service, output_dir):
    name = service.submit(["accelerator=gpu", "devices=2", "+extra.fake_sleep=1"])["name"]
    service.wait_for(name, {"running", "succeeded", "failed"}, timeout=60)
    job = show_job(job_id(output_dir, name))
    assert "gres:gpu:2" in (job.get("TresPerNode", "") + job.get("TresPerJob", "")), job
    assert service.wait_for(name, timeout=60)["status"] == "succeeded"


def test_a_run_asking_more_gpus_than_a_node_has_fails_with_slurms_message(service):
    name = service.submit(["accelerator=gpu", "devices=4", "+extra.fake_sleep=1"])["name"]
    run = service.wait_for(name, timeout=60)
    assert run["status"] == "failed", run
    assert "Slurm refused the job" in run["reason"], run["reason"]


@pytest.mark.usefixtures("slurm")
def test_a_jobs_log_past_the_bound_keeps_head_and_tail_and_the_api_says_what_was_cut(output_dir):
    """Issue 20: the job's wrapper writes the log bounded (LABRUN_MAX_LOG_BYTES reaches it through the
    job's environment), as a local run's does."""
    svc = slurm_service(output_dir, LABRUN_MAX_LOG_BYTES=str(64 << 10)).start()
    try:
        name = svc.submit(["+extra.fake_lines=30000"])["name"]
        done = svc.wait_for(name, timeout=120)
        assert done["status"] == "succeeded", done
        assert done["log_cut_bytes"] > 500_000, done
        whole = svc.http.get(f"/runs/{name}/logs", params={"offset": 0})
        assert int(whole.headers["X-Log-Size"]) == len(whole.content) <= 64 << 10
        assert int(whole.headers["X-Log-Cut-Bytes"]) == done["log_cut_bytes"]
        cut_at = int(whole.headers["X-Log-Cut-At"])
        assert whole.content[cut_at:].startswith(b"[labrun: %d bytes of output cut" % done["log_cut_bytes"])
        assert whole.text.startswith(f"fake trainer {name}: line 1\n")
        assert whole.text.endswith(f"fake trainer {name}: line 30000\n")
        tail = svc.http.get(f"/runs/{name}/logs", params={"tail": 1})
        assert tail.text == f"fake trainer {name}: line 30000\n"
    finally:
        svc.stop()
