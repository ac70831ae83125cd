"""The "preempted" and "resumed" events through a real service process: a low run is preempted by a high
one (one CPU slot, the stand-in trainer saves ckpt/last.ckpt on the preemption's SIGTERM); its owner, who
chose both events, gets one message for each, naming the preempting class and what was lost."""

from __future__ import annotations

import time

from service_helpers import wait_for
from test_service_notifications import add_webhook, quiet

PREEMPT = {"LABRUN_PREEMPT_MIN_RUN_S": "0", "LABRUN_PREEMPT_GRACE_S": "2", "LABRUN_MAX_CPU_RUNS": "1"}


def post(client, *overrides: str, priority: str, notify: list[str]) -> dict:
    body = {"overrides": list(overrides), "priority": priority, "notify": notify}
    response = client.post("/runs", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_preempted_runs_owner_is_told_by_which_class_and_what_was_lost_then_that_it_resumed(
    service, receiver
):
    svc = service(**PREEMPT)
    with svc.client() as client:
        add_webhook(client, receiver)
        low = post(client, "+extra.fake_sleep=5", priority="low", notify=["preempted", "resumed"])
        wait_for(client, low["name"], {"running"})
        deadline = time.monotonic() + 30
        while ": line 1" not in client.get(f"/runs/{low['name']}/logs").text:  # its handlers are in place
            assert time.monotonic() < deadline, "the low run never printed its first line"
            time.sleep(0.02)
        high = post(client, "+extra.fake_sleep=0.2", priority="high", notify=["preempted", "resumed"])
        assert wait_for(client, high["name"])["status"] == "succeeded"
        [preempted] = receiver.wait(1, "preempted")
        [resumed] = receiver.wait(1, "resumed")
        assert wait_for(client, low["name"], timeout=60)["status"] == "succeeded"
        quiet(receiver)
        assert [m["event"] for m in receiver.events()] == ["preempted", "resumed"]  # not the high run's end
        run = preempted["run"]
        assert (run["name"], run["status"], run["attempt"], run["exit_code"]) == (
            low["name"],
            "preempted",
            1,
            75,
        )
        assert f"preempted by a high run ({high['name']})" in run["reason"]
        assert "s of work since its checkpoint; resumes from ckpt/last.ckpt as attempt 2" in run["reason"]
        assert run["duration_s"] >= 0
        assert receiver.received[0]["headers"]["X-Labrun-Event"] == "preempted"
        assert (resumed["run"]["status"], resumed["run"]["attempt"]) == ("resumed", 2)
        assert resumed["run"]["reason"] == run["reason"]
