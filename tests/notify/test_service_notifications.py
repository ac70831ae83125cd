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
    assert added["kind"] == "webhook"
    assert added["signing_secret"].startswith("whsec_")
    receiver.secret = added["signing_secret"]
    return added


def quiet(_receiver, seconds: float = 1.0) -> None:
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
        assert len(receiver.events()) == 1
        assert receiver.bad_signatures == 0
        assert message["version"] == 1
        assert message["event"] == "failed"
        assert len(message["id"]) == 32
        run = message["run"]
        assert run["name"] == bad["name"]
        assert run["status"] == "failed"
        assert run["exit_code"] == 3
        assert "3" in run["reason"]
        assert run["log_tail"]
        assert run["url"] == f"https://labrun.example:8000/runs/{bad['name']}/view"
        assert run["duration_s"] >= 0
        header = receiver.received[0]["headers"]
        assert header["X-Labrun-Delivery"] == message["id"]
        assert header["X-Labrun-Event"] == "failed"
        [listed] = client.get("/me/notify/destinations").json()["data"]
        assert listed["state"] == "active"
        assert listed["last_sent_at"]
        assert "signing_secret" not in listed


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
        assert message["event"] == "succeeded"
        assert message["run"]["name"] == wanted.json()["name"]
        assert message["run"]["metrics"]["val_loss"] == 0.5
        unknown = client.post("/runs", json={"overrides": [], "notify": ["exploded"]})
        assert unknown.status_code == 422
        assert "exploded" in unknown.json()["detail"]
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
        assert message["event"] == "sweep_finished"
        assert body["name"] == sweep["name"]
        assert body["counts"] == {"succeeded": 7, "failed": 1}
        assert body["best"]["val_loss"] == 0.2
        assert len(body["failed"]) == 1


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
        assert listed["failures"] >= 1
        assert "HTTP 503" in listed["last_error"]
        receiver.down = False
        [message] = receiver.wait(1)
        quiet(receiver)
        assert len(receiver.events()) == 1
        assert message["run"]["name"] == bad["name"]
        [listed] = client.get("/me/notify/destinations").json()["data"]
        assert listed["failures"] == 0
        assert listed["state"] == "active"


def test_kill_9_between_a_runs_end_and_its_delivery_delivers_once_after_restart(
    output_dir, tmp_path, receiver
):
    from notify_helpers import notify_env

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
        assert len(receiver.events()) == 1
        assert message["run"]["name"] == bad["name"]
    finally:
        svc.stop()


def test_the_cli_adds_from_stdin_lists_tests_and_removes_and_submit_chooses_events(service, receiver):
    import os
    import subprocess
    import sys

    svc = service()

    def labrun(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        env = {**os.environ, "LABRUN_URL": svc.url}
        return subprocess.run(
            [sys.executable, "-m", "labrun", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    added = labrun("notify", "add", stdin=receiver.url + "\n")
    assert added.returncode == 0, added.stderr
    id = added.stdout.strip()
    receiver.secret = added.stderr.split("shown this once: ")[1].split()[0]
    listed = labrun("notify", "ls")
    assert f"{id}  active  webhook" in listed.stdout
    assert receiver.secret not in listed.stdout
    assert labrun("notify", "test", id).returncode == 0
    assert receiver.wait(1, "test")
    submitted = labrun("submit", "--notify", "succeeded", "+extra.fake_sleep=0")
    assert submitted.returncode == 0, submitted.stderr
    [message] = receiver.wait(1, "succeeded")
    assert message["run"]["name"] == submitted.stdout.strip()
    assert labrun("notify", "events", "succeeded,failed").stdout.strip() == "succeeded,failed"
    refused = labrun("notify", "add", "gopher://x")
    assert refused.returncode != 0
    assert "gopher" in refused.stderr
    assert labrun("notify", "filter", id, "failed").stdout.strip() == "failed"
    assert "(only: failed)" in labrun("notify", "ls").stdout
    assert labrun("notify", "filter", id, "all").stdout.strip() == "all"
    assert labrun("notify", "rm", id).returncode == 0
    assert "no destinations" in labrun("notify", "ls").stderr


def test_a_destination_that_keeps_failing_is_paused_and_shows_its_error(service, receiver):
    svc = service(
        LABRUN_NOTIFY_PAUSE_AFTER="3", LABRUN_NOTIFY_RETRY_BASE_S="0.05", LABRUN_NOTIFY_RETRY_MAX_S="0.1"
    )
    with svc.client() as client:
        add_webhook(client, receiver)
        receiver.down = True
        bad = submit(client, "+extra.fake_exit=3")
        wait_for(client, bad["name"])
        deadline = time.monotonic() + 20
        while (listed := client.get("/me/notify/destinations").json()["data"][0])["state"] != "paused":
            assert time.monotonic() < deadline, listed
            time.sleep(0.05)
        refused = receiver.refused
        quiet(receiver)
        assert receiver.refused == refused == 3  # paused: not tried again
        assert "HTTP 503" in listed["last_error"]
        receiver.down = False
        assert client.post(f"/me/notify/destinations/{listed['id']}/test").json() == {
            "ok": True,
            "error": None,
        }
        [message] = receiver.wait(1, "failed")  # resumed: what waited is sent
        assert message["run"]["name"] == bad["name"]


def test_a_destinations_own_filter_narrows_what_reaches_it(service, receiver, httpserver):
    from notify_helpers import Receiver

    everything = Receiver(httpserver, "/everything")
    svc = service()
    with svc.client() as client:
        failures = add_webhook(client, receiver)
        add_webhook(client, everything)
        assert client.put("/me/notify/events", json={"events": ["succeeded", "failed"]}).status_code == 200
        filtered = client.put(f"/me/notify/destinations/{failures['id']}/events", json={"events": ["failed"]})
        assert filtered.status_code == 200, filtered.text
        assert filtered.json()["events"] == ["failed"]
        bad = client.put(f"/me/notify/destinations/{failures['id']}/events", json={"events": ["disk_low"]})
        assert bad.status_code == 422  # a server event, not one of a user's runs
        assert "disk_low" in bad.json()["detail"]
        ok = submit(client, "+extra.fake_sleep=0")
        wait_for(client, ok["name"])
        failed = submit(client, "+extra.fake_exit=3")
        wait_for(client, failed["name"])
        assert [m["event"] for m in everything.wait(2)] == ["succeeded", "failed"]
        [message] = receiver.wait(1)
        quiet(receiver)
        assert len(receiver.events()) == 1
        assert message["run"]["name"] == failed["name"]
        listed = {d["id"]: d["events"] for d in client.get("/me/notify/destinations").json()["data"]}
        assert listed[failures["id"]] == ["failed"]
        assert list(listed.values()).count(None) == 1
