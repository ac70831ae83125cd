"""A requeued Slurm job (``scontrol requeue``, what a preemption with PreemptMode=REQUEUE does) of a real
trainer run resumes from its last checkpoint: one run, one WandB run, a continuous epoch count."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest
from slurm_helpers import REAL_TRAINER, ended_state, job_id, jobs_named, slurm_service, wait_until
from tiny_run import tiny_run

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

EPOCHS = 4
TINY = tiny_run(epochs=EPOCHS, examples=64)


@pytest.mark.usefixtures("slurm")
def test_scontrol_requeue_resumes_the_run_from_its_last_checkpoint(output_dir):
    svc = slurm_service(output_dir, REAL_TRAINER, LABRUN_CANCEL_GRACE_S="10").start()
    try:
        run = svc.submit(TINY)
        name, run_dir = run["name"], output_dir / run["run_dir"]
        svc.wait_for(name, {"running"}, timeout=60)
        job = job_id(output_dir, name)
        # after the first epoch (its last.ckpt written), before the run ends
        wait_until(lambda: (run_dir / "ckpt" / "last.ckpt").exists(), 240, "the first epoch's checkpoint")
        subprocess.run(["scontrol", "requeue", job], check=True)
        state = output_dir / ".labrun" / "runs" / name
        wait_until(
            lambda: (svc.http.get(f"/runs/{name}").json()["waiting_reason"] or "").startswith("requeued"),
            120,
            "the API to show the run waiting to run again",
        )
        wait_until(lambda: _starts(state) >= 2, 300, "the second attempt to start")
        assert svc.http.get(f"/runs/{name}").json()["status"] == "running"
        done = svc.wait_for(name, timeout=400)
        assert done["status"] == "succeeded", done
        assert done["exit_code"] == 0, done
        assert done["attempts"] == 2, done
        assert jobs_named(name) == [job]
        assert ended_state(job) == "COMPLETED"
        assert svc.http.get("/runs", params={"limit": 50}).json()["count"] == 1  # one run, not two
        record = json.loads((run_dir / "run.json").read_text())
        assert [a["status"] for a in record["attempts"]] == ["preempted", "succeeded"], record["attempts"]
        assert record["status"] == "succeeded"
        with open(run_dir / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        val_epochs = [int(r["epoch"]) for r in rows if r["val_loss"]]
        assert val_epochs == list(range(EPOCHS)), val_epochs  # no epoch repeated or skipped
        steps = [int(r["step"]) for r in rows if r["train_loss"]]
        assert steps == sorted(steps), steps
        assert len(steps) == len(set(steps)), steps
        offline = sorted((run_dir / "wandb").glob("offline-run-*"))
        assert len(offline) == 2, offline
        assert len({p.name.rsplit("-", 1)[1] for p in offline}) == 1, offline
        log = svc.http.get(f"/runs/{name}/logs").text
        assert "resuming from" in log
        assert "preempted" in log
    finally:
        svc.stop()


def _starts(state) -> int:
    try:
        lines = (state / "attempts").read_text().splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if '"start"' in line)
