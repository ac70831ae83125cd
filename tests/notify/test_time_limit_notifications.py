"""The "time_limit_near" and "time_limit_reached" events through a real service process: both are among the
default events, so the owner of a run that chose nothing is told that its limit is near, then that it
stopped there with a checkpoint (instead of a plain "cancelled")."""

from __future__ import annotations

from service_helpers import wait_for
from test_service_notifications import add_webhook, quiet

FAST = {"LABRUN_TIME_LIMIT_SAVE_S": "1", "LABRUN_TIME_LIMIT_WARN_S": "2"}


def test_the_owner_is_told_the_limit_is_near_then_that_the_run_stopped_there(service, receiver):
    svc = service(**FAST)
    with svc.client() as client:
        add_webhook(client, receiver)
        response = client.post("/runs", json={"overrides": ["+extra.fake_sleep=60"], "time_limit": "4s"})
        assert response.status_code == 201, response.text
        name = response.json()["name"]
        [near] = receiver.wait(1, "time_limit_near")
        [reached] = receiver.wait(1, "time_limit_reached")
        assert wait_for(client, name)["status"] == "cancelled"
        quiet(receiver)
    assert [m["event"] for m in receiver.events()] == ["time_limit_near", "time_limit_reached"]
    assert near["run"]["name"] == name
    assert near["run"]["reason"].startswith("time limit of 4 s is near: ")
    assert f"labrun time-limit {name} +2h" in near["run"]["reason"]
    assert reached["run"]["status"] == "cancelled"
    assert reached["run"]["reason"].startswith("time limit of 4 s reached; resumable from its checkpoint")
    texts = [m["headers"].get("X-Labrun-Event") for m in receiver.received]
    assert texts == ["time_limit_near", "time_limit_reached"]


def test_the_messages_titles_say_what_happened_to_the_limit():
    from app.notify.message import compose
    from app.store.outbox import Event

    body = {
        "run": "r1",
        "owner": "ann",
        "status": "running",
        "reason": "time limit of 6 h is near: 10 min left",
    }
    near = compose(Event(1, "e1", "time_limit_near", "r1", "ann", 0.0, body), None, lambda _: {})
    assert near.title == "labrun: r1 is near its time limit"
    assert "Reason: time limit of 6 h is near: 10 min left" in near.text
    ended = {**body, "status": "cancelled", "reason": "time limit of 6 h reached; resumable"}
    reached = compose(Event(2, "e2", "time_limit_reached", "r1", "ann", 0.0, ended), None, lambda _: {})
    assert reached.title == "labrun: r1 reached its time limit"
