"""A run's own time limit on the real Slurm cluster (docs/time-limits.md): the job's --time is what is left
of it (plus the USR1 warning before it, LABRUN_SLURM_SIGNAL_BEFORE_S); at the USR1 the run saves its
checkpoint and ends, and the job is NOT requeued, unlike a cluster preemption or the site's own limit."""

from __future__ import annotations

import json

import pytest
from slurm_helpers import job_id, jobs_named, show_job, slurm_service

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.mark.usefixtures("slurm")
def test_a_run_at_its_own_limit_checkpoints_and_its_job_is_not_requeued(output_dir):
    # --time = ceil((10 s + 50 s) / 60) = 1 min; the USR1 comes 50 s before that, ~10 s in
    svc = slurm_service(output_dir, LABRUN_SLURM_SIGNAL_BEFORE_S="50").start()
    try:
        response = svc.http.post("/runs", json={"overrides": ["+extra.fake_sleep=300"], "time_limit": "10s"})
        assert response.status_code == 201, response.text
        run = response.json()
        name = run["name"]
        svc.wait_for(name, {"running"}, timeout=60)
        job = job_id(output_dir, name)
        assert show_job(job)["TimeLimit"] == "00:01:00"
        done = svc.wait_for(name, timeout=150)
        assert done["status"] == "cancelled", done
        assert done["reason"].startswith("time limit of 10 s reached; resumable from its checkpoint"), done
        assert done["attempts"] == 1, done
        assert (output_dir / run["run_dir"] / "ckpt" / "last.ckpt").is_file()
        assert jobs_named(name) == [job]  # one job: not requeued
        state = output_dir / ".labrun" / "runs" / name / "attempts"
        ends = [json.loads(line) for line in state.read_text().splitlines() if "end" in line]
        assert [(e["exit_code"], e["requeue"], e.get("time_limit")) for e in ends] == [(75, False, True)], (
            ends
        )
    finally:
        svc.stop()
