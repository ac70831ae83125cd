"""Priorities on Slurm: the classes map to partitions (LABRUN_SLURM_PARTITION_HIGH/LOW), Slurm chooses the
victim and requeues it (the CI cluster: PreemptType=preempt/partition_prio, PreemptMode=REQUEUE, partition
"urgent" above "debug"; .ci/engines/slurm.sh), and labrun carries the victim on as its next attempt. labrun's
own victim choice does not apply here (docs/priorities.md)."""

from __future__ import annotations

import json
import subprocess

import pytest
from slurm_helpers import job_id, show_job, slurm_service, starts, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _node_cpus() -> int:
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[0])


@pytest.mark.usefixtures("slurm")
def test_a_high_run_preempts_a_low_one_through_the_partitions_and_the_low_one_carries_on(output_dir):
    cpus = _node_cpus()  # each run asks for the whole node: the high one fits only in the low one's place
    svc = slurm_service(
        output_dir,
        LABRUN_SLURM_CPUS_PER_TASK=str(cpus),
        LABRUN_SLURM_PARTITION_HIGH="urgent",
        LABRUN_SLURM_PARTITION_LOW="debug",
    ).start()
    try:
        low = svc.http.post("/runs", json={"overrides": ["+extra.fake_sleep=20"], "priority": "low"})
        assert low.status_code == 201, low.text
        name = low.json()["name"]
        svc.wait_for(name, {"running"}, timeout=60)
        wait_until(lambda: name in starts(output_dir), 60, "the low run's trainer to start")
        low_job = job_id(output_dir, name)
        assert show_job(low_job)["Partition"] == "debug"

        high = svc.http.post("/runs", json={"overrides": ["+extra.fake_sleep=2"], "priority": "high"})
        assert high.status_code == 201, high.text
        urgent = high.json()["name"]
        done = svc.wait_for(urgent, timeout=180)
        assert done["status"] == "succeeded", done
        assert show_job(job_id(output_dir, urgent))["Partition"] == "urgent"
        assert starts(output_dir).index(urgent) > 0  # it started after the low run, in its place

        # Slurm requeued the low run's job (the same job id, started again after its requeue delay): labrun
        # carries it on, and its wrapper numbers the new start as the run's second attempt (Slurm's restart
        # count). labrun's own count follows when it sees the requeue: a requeue within one poll interval of
        # the start may be seen only at the end, so this test reads the wrapper's record.
        wait_until(lambda: starts(output_dir).count(name) == 2, 300, "the low run's second attempt")
        assert job_id(output_dir, name) == low_job
        finished = svc.wait_for(name, timeout=120)
        assert finished["status"] == "succeeded", finished
        lines = (output_dir / ".labrun" / "runs" / name / "attempts").read_text().splitlines()
        assert [json.loads(line)["attempt"] for line in lines if '"start"' in line] == [1, 2]
    finally:
        svc.stop()
