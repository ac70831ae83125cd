"""Through a real service process: a run's end -> the outbox -> the delivery worker -> a real webhook
receiver on loopback (signed). Failed runs, sweeps, per-run and per-user choices, a receiver that is down
for a while, a kill -9 between a run's end and the delivery."""

from __future__ import annotations

import time

from service_helpers import ServiceProcess, submit, wait_for


def add_webhook(client, receiver) -> dict:
    response = client.post("/me/notify/destinations", json={"url": receiver.url})
    assert response.status_code == 201, response.text
    added = response.json()
    assert added["kind"] == "webhook" and added["signing_secret"].startswith("whsec_")
    receiver.secret = added["signing_secret"]
    return added


def quiet(receiver, seconds: float = 1.0) -> None:
    """Give the worker time to send anything it should not have sent."""
    time.sleep(seconds)


def test_a_failed_run_sends_one_signed_message_with_its_reason(service, receiver):
    svc = service()
    with svc.client() as client:
        add_webhook(client, receiver)
        ok = submit(client, "+extra.fake_sleep=0")  # the default events: failed and sweep_finished
        bad = submit(client, "+extra.fake_exit=3", "+extra.fake_lines=5")
        assert wait_for(client, ok["name"])["status"] == "succeeded"
        assert wait_for(client, bad["name"])["status"] == "failed"
        [message] = receiver.wait(1)
        quiet(receiver)
        assert len(receiver.events()) == 1 and receiver.bad_signatures == 0
        assert message["version"] == 1 and message["event"] == "failed" and len(message["id"]) == 32
        run = message["run"]
        assert run["name"] == bad["name"] and run["status"] == "failed" and run["exit_code"] == 3
        assert "3" in run["reason"] and run["log_tail"]
        assert run["url"] == f"https://labrun.example:8000/runs/{bad['name']}/view"
        assert run["duration_s"] >= 0
        header = receiver.received[0]["headers"]
        assert header["X-Labrun-Delivery"] == message["id"] and header["X-Labrun-Event"] == "failed"
        [listed] = client.get("/me/notify/destinations").json()["data"]
        assert listed["state"] == "active" and listed["last_sent_at"] and "signing_secret" not in listed


def test_per_run_and_per_user_choices_are_respected(service, receiver):
    svc = service()
    with svc.client() as client:
        add_webhook(client, receiver)
        wanted = client.post("/runs", json={"overrides": ["+extra.fake_sleep=0"], "notify": ["succeeded"]})
        silent = client.post("/runs", json={"overrides": ["+extra.fake_exit=2"], "notify": []})
        assert wanted.status_code == silent.status_code == 201
        for run in (wanted.json(), silent.json()):
            wait_for(client, run["name"])
        [message] = receiver.wait(1)
        assert message["event"] == "succeeded" and message["run"]["name"] == wanted.json()["name"]
        assert message["run"]["metrics"]["val_loss"] == 0.5
        unknown = client.post("/runs", json={"overrides": [], "notify": ["exploded"]})
        assert unknown.status_code == 422 and "exploded" in unknown.json()["detail"]
        # the user's defaults: now only succeeded runs
        assert client.put("/me/notify/events", json={"events": ["succeeded"]}).json()["events"] == [
            "succeeded"
        ]
        failed = submit(client, "+extra.fake_exit=4")
        succeeded = submit(client, "+extra.fake_sleep=0")
        wait_for(client, failed["name"])
        wait_for(client, succeeded["name"])
        messages = receiver.wait(2)
        quiet(receiver)
        assert [m["run"]["name"] for m in receiver.events()] == [wanted.json()["name"], succeeded["name"]]
        assert len(messages) == 2


def test_a_sweep_of_8_sends_one_message_at_its_end(service, receiver):
    svc = service()
    with svc.client() as client:
        add_webhook(client, receiver)
        losses = "0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.9"
        response = client.post(
            "/sweeps",
            json={"overrides": [f"+extra.fake_val_loss={losses}", "+extra.fake_exit_if_val_loss=0.9"]},
        )
        assert response.status_code == 201, response.text
        sweep = response.json()
        assert sweep["size"] == 8
        [message] = receiver.wait(1, timeout=60)
        quiet(receiver)
        assert len(receiver.events()) == 1  # its runs, one of them failed, sent nothing of their own
        body = message["sweep"]
        assert message["event"] == "sweep_finished" and body["name"] == sweep["name"]
        assert body["counts"] == {"succeeded": 7, "failed": 1}
        assert body["best"]["val_loss"] == 0.2 and len(body["failed"]) == 1


def test_a_receiver_down_for_a_while_gets_the_message_once_it_is_back(service, receiver):
    svc = service()
    with svc.client() as client:
        add_webhook(client, receiver)
        receiver.down = True
        bad = submit(client, "+extra.fake_exit=3")
        wait_for(client, bad["name"])
        deadline = time.monotonic() + 20
        while receiver.refused < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        [listed] = client.get("/me/notify/destinations").json()["data"]
        assert listed["failures"] >= 1 and "HTTP 503" in listed["last_error"]
        receiver.down = False
        [message] = receiver.wait(1)
        quiet(receiver)
        assert len(receiver.events()) == 1 and message["run"]["name"] == bad["name"]
        [listed] = client.get("/me/notify/destinations").json()["data"]
        assert listed["failures"] == 0 and listed["state"] == "active"


def test_kill_9_between_a_runs_end_and_its_delivery_delivers_once_after_restart(
    output_dir, tmp_path, receiver
):
    from conftest import notify_env

    svc = ServiceProcess(output_dir, **notify_env(tmp_path, LABRUN_NOTIFY="false"))  # nothing is sent
    svc.start()
    try:
        with svc.client() as client:
            add_webhook(client, receiver)
            bad = submit(client, "+extra.fake_exit=3")
            wait_for(client, bad["name"])
        quiet(receiver, 0.5)
        assert receiver.events() == []
        svc.kill9()
        svc.env["LABRUN_NOTIFY"] = "true"
        svc.start()
        [message] = receiver.wait(1)
        quiet(receiver)
        assert len(receiver.events()) == 1 and message["run"]["name"] == bad["name"]
    finally:
        svc.stop()
