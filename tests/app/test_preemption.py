"""Preemption end to end, through a real service process with the local launcher and the stand-in trainer
(tests/app/fake_trainer.py preempts as the trainer does: a SIGTERM without the cancel marker writes
ckpt/last.ckpt and exits 75). One CPU slot (or two GPUs): a low run holds it, a high run comes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from service_helpers import service_processes, starts, wait_for
from service_process import wait_until

FAST = {"LABRUN_PREEMPT_MIN_RUN_S": "0", "LABRUN_PREEMPT_GRACE_S": "2", "LABRUN_MAX_CPU_RUNS": "1"}


@pytest.fixture
def service(output_dir) -> Iterator:
    yield from service_processes(output_dir, cancel_at_end=True, **FAST)


def post(client, *overrides: str, priority: str = "normal") -> dict:
    response = client.post("/runs", json={"overrides": list(overrides), "priority": priority})
    assert response.status_code == 201, response.text
    return response.json()


def running(client, name: str) -> None:
    """Until the run's trainer is past its start-up (its handlers are in place: it printed its first line)."""
    wait_for(client, name, {"running"})
    wait_until(lambda: ": line 1" in client.get(f"/runs/{name}/logs").text, what=f"{name}'s first line")


def attempts(client, name: str) -> list[dict]:
    return client.get(f"/runs/{name}/attempts").json()["attempts"]


def test_a_high_run_preempts_a_low_one_which_resumes_from_its_checkpoint(service, output_dir):
    svc = service()
    with svc.client() as client:
        low = post(client, "+extra.fake_sleep=5", priority="low")
        running(client, low["name"])
        submitted = time.monotonic()
        high = post(client, "+extra.fake_sleep=0.2", "+extra.fake_i=1", priority="high")
        assert high["priority"] == "high"
        wait_for(client, high["name"], {"running", "succeeded"})
        start_s = time.monotonic() - submitted
        assert start_s < 2 + 1.5, start_s  # the victim's time to its safe point (here ~0) + labrun's own
        assert wait_for(client, high["name"])["status"] == "succeeded"
        done = wait_for(client, low["name"], timeout=60)
        assert (done["status"], done["attempts"], done["priority"]) == ("succeeded", 2, "low")
        assert done["run_dir"] == low["run_dir"]
        (first,) = attempts(client, low["name"])
        assert (first["attempt"], first["status"], first["exit_code"]) == (1, "preempted", 75)
        assert f"preempted by a high run ({high['name']})" in first["reason"]
        assert "resumes from ckpt/last.ckpt as attempt 2" in first["reason"]
        log = client.get(f"/runs/{low['name']}/logs").text
        assert "resumed, from ckpt/last.ckpt" in log
        metrics = client.get("/metrics").text
        assert 'labrun_preemptions_total{priority="low"} 1.0' in metrics
    assert starts(output_dir) == [low["name"], high["name"], low["name"]]  # nothing ran twice at once


def test_a_victim_that_ignores_sigterm_is_killed_after_the_grace_and_resumes_from_its_last_checkpoint(
    service, output_dir
):
    svc = service()
    with svc.client() as client:
        low = post(client, "+extra.fake_sleep=8", "+extra.fake_on_term=ignore", priority="low")
        running(client, low["name"])
        ckpt = output_dir / low["run_dir"] / "ckpt" / "last.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        ckpt.write_text("saved at an epoch's end")  # what the trainer leaves between epochs
        high = post(client, "+extra.fake_sleep=0.2", priority="high")
        waiting = wait_until(
            lambda: client.get(f"/runs/{high['name']}").json()["waiting_reason"], what="a waiting reason"
        )
        assert waiting == f"preempting run {low['name']}: saving a checkpoint"
        victim = client.get(f"/runs/{low['name']}").json()
        assert victim["status"] == "running"
        assert f"being preempted for {high['name']}" in victim["waiting_reason"]
        queue = client.get("/queue").json()["users"]["local"]
        assert queue["running"][0]["preempting_for"] == high["name"]
        assert queue["queued"][0]["priority"] == "high"
        assert wait_for(client, high["name"], timeout=30)["status"] == "succeeded"
        (first,) = attempts(client, low["name"])
        assert first["status"] == "preempted"
        assert "killed after the grace of 2 s" in first["reason"], first
        assert "since its checkpoint; resumes from ckpt/last.ckpt as attempt 2" in first["reason"], first
        done = wait_for(client, low["name"], timeout=60)
        assert (done["status"], done["attempts"]) == ("succeeded", 2)


def test_a_victim_without_a_checkpoint_restarts_from_the_beginning_and_says_so(service):
    svc = service()
    with svc.client() as client:
        low = post(client, "+extra.fake_sleep=10", "+extra.fake_no_ckpt=1", priority="low")
        running(client, low["name"])
        time.sleep(1)
        high = post(client, "+extra.fake_sleep=0.2", priority="high")
        assert wait_for(client, high["name"])["status"] == "succeeded"
        requeued = wait_for(client, low["name"], {"queued", "running"})
        assert requeued["attempts"] == 2
        assert "no checkpoint, lost" in requeued["reason"], requeued
        assert "restarts from the beginning as attempt 2" in requeued["reason"], requeued
        running(client, low["name"])
        log_says = lambda: "resumed, from the beginning" in client.get(f"/runs/{low['name']}/logs").text  # noqa: E731
        wait_until(log_says, what="the second attempt's first line")


def test_normal_runs_are_not_preempted_unless_the_server_allows_it(service):
    svc = service()
    with svc.client() as client:
        normal = post(client, "+extra.fake_sleep=3")
        wait_for(client, normal["name"], {"running"})
        high = post(client, "+extra.fake_sleep=0.1", priority="high")
        time.sleep(1)
        assert client.get(f"/runs/{high['name']}").json()["status"] == "queued"
        assert client.get(f"/runs/{normal['name']}").json()["status"] == "running"
        assert wait_for(client, normal["name"])["attempts"] == 1
        assert wait_for(client, high["name"])["status"] == "succeeded"


def test_two_low_gpu_runs_are_preempted_for_one_two_gpu_run(service):
    svc = service(LABRUN_GPUS="0,1", LABRUN_PREEMPT_NORMAL="true")
    with svc.client() as client:
        gpu = ("accelerator=gpu", "devices=1")
        lows = [
            post(client, *gpu, "+extra.fake_sleep=30", f"+extra.fake_i={i}", priority="low") for i in (1, 2)
        ]
        for low in lows:
            running(client, low["name"])
        pair = post(client, "accelerator=gpu", "devices=2", "+extra.fake_sleep=0.3")  # normal preempts low
        started = wait_for(client, pair["name"], {"running", "succeeded"})
        assert sorted(started["gpus"]) == [0, 1]
        for low in lows:
            assert attempts(client, low["name"])[0]["status"] == "preempted"
        for low in lows:
            assert wait_for(client, low["name"], {"running"}, timeout=30)["attempts"] == 2


def test_kill_9_during_a_preemption_runs_nothing_twice_and_the_victim_still_resumes(service, output_dir):
    svc = service(LABRUN_PREEMPT_GRACE_S="3")
    with svc.client() as client:
        low = post(client, "+extra.fake_sleep=6", "+extra.fake_on_term=ignore", priority="low")
        running(client, low["name"])
        high = post(client, "+extra.fake_sleep=0.2", priority="high")
        wait_until(
            lambda: client.get(f"/runs/{high['name']}").json()["waiting_reason"], what="the preemption"
        )
    svc.kill9()
    svc = service(LABRUN_PREEMPT_GRACE_S="3")
    with svc.client() as client:
        assert wait_for(client, high["name"], timeout=30)["status"] == "succeeded"
        done = wait_for(client, low["name"], timeout=60)
        assert (done["status"], done["attempts"]) == ("succeeded", 2)
        assert [a["status"] for a in attempts(client, low["name"])] == ["preempted"]
    assert starts(output_dir) == [low["name"], high["name"], low["name"]]


@pytest.mark.slow
def test_the_real_trainer_saves_its_checkpoint_when_preempted_and_resumes_from_it(service, output_dir):
    from tiny_run import tiny_run

    run = [*tiny_run(epochs=30), "deterministic=true"]
    svc = service(trainer_command=None, LABRUN_PREEMPT_GRACE_S="120")  # the real `python -m trainer`
    with svc.client() as client:
        low = post(client, *run, priority="low")
        wait_until(
            lambda: (
                ((client.get(f"/runs/{low['name']}").json().get("progress") or {}).get("epoch") or 0) >= 1
            ),
            timeout=300,
            what="the low run's second epoch",
        )
        high = post(client, *tiny_run(epochs=1), "seed=2", priority="high")
        assert wait_for(client, high["name"], timeout=300)["status"] == "succeeded"
        (first,) = attempts(client, low["name"])
        assert (first["status"], first["exit_code"]) == ("preempted", 75), first
        assert "since its checkpoint; resumes from ckpt/last.ckpt as attempt 2" in first["reason"], first
        done = wait_for(client, low["name"], timeout=600)
        log = client.get(f"/runs/{low['name']}/logs", params={"tail": 40}).text
        assert (done["status"], done["attempts"]) == ("succeeded", 2), f"{done}\n{log}"
        # The same run left alone: a preemption loses nothing, to the last digit of every logged loss
        # (trainer/preempt.py; docs/exact-resume.md).
        alone = post(client, *run)
        assert wait_for(client, alone["name"], timeout=600)["status"] == "succeeded"
    record = json.loads((output_dir / low["run_dir"] / "run.json").read_text())
    assert record["status"] == "succeeded"
    preempted_csv = (output_dir / low["run_dir"] / "metrics.csv").read_text()
    assert preempted_csv == (output_dir / alone["run_dir"] / "metrics.csv").read_text()
    assert preempted_csv.count("\n") > 30  # every epoch's rows are there
