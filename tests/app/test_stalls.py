"""Stalled runs (app/lifecycle/stalls.py) through the in-process service and the stand-in trainer: a run
that stops writing progress and output is stalled, then cancelled with the reason after the grace period;
its owner can extend it; a run that keeps logging is never stalled; a run waiting after a preemption is not
executing, so it cannot stall."""

from __future__ import annotations

import time

import pytest
from service_helpers import submit, wait_for


def wait_until(check, timeout: float = 15.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come within {timeout} s")
        time.sleep(0.05)


def stalled(client, name: str) -> dict | None:
    run = client.get(f"/runs/{name}").json()
    return run if run["stalled"] else None


def test_a_run_that_stops_making_progress_is_stalled_then_cancelled_with_the_reason(make_client) -> None:
    client = make_client(stall_after_s=1.0, stall_grace_s=1.5)
    name = submit(client, "+extra.fake_hang=60")["name"]
    wait_for(client, name, {"running"})
    run = wait_until(lambda: stalled(client, name), what="the stall")
    stall = run["stall"]
    assert run["status"] == "running"
    assert stall["limit_s"] == 1.0
    assert stall["last_step"] == 1
    assert stall["since"] < stall["cancel_at"]
    assert stall["message"].startswith("no progress and no output for 1 s (last step 1 at ")
    assert "labrun_runs_stalled 1.0" in client.get("/metrics").text  # Prometheus sees it too
    started = time.monotonic()
    run = wait_for(client, name, timeout=20)
    assert run["status"] == "cancelled"
    assert run["reason"].startswith("cancelled: stalled, no progress and no output for ")
    assert "(last step 1 at " in run["reason"]
    assert time.monotonic() - started >= 0.5  # the grace period came first
    assert run["stalled"] is False  # an ended run is not stalled
    assert run["stall"] is None
    assert "labrun_runs_stalled 0.0" in client.get("/metrics").text


def test_a_run_that_keeps_logging_without_progress_is_never_stalled(make_client) -> None:
    client = make_client(stall_after_s=0.5, stall_grace_s=0.5)
    name = submit(client, "+extra.fake_chatter=3")["name"]
    wait_for(client, name, {"running"})
    seen_stalled = False
    while (run := client.get(f"/runs/{name}").json())["status"] == "running":
        seen_stalled = seen_stalled or run["stalled"]
        time.sleep(0.05)
    assert run["status"] == "succeeded", run
    assert not seen_stalled


def test_the_owner_extends_a_stalled_run_and_may_ask_for_a_longer_limit(make_client) -> None:
    client = make_client(stall_after_s=1.0, stall_grace_s=2.0, max_stall_after_s=60)
    name = submit(client, "+extra.fake_hang=60")["name"]
    wait_for(client, name, {"running"})
    wait_until(lambda: stalled(client, name), what="the stall")
    extended = client.post(f"/runs/{name}/extend-stall")
    assert extended.status_code == 200, extended.text
    assert extended.json()["stalled"] is False
    wait_until(lambda: stalled(client, name), what="the stall again")  # still silent: stalled again
    too_long = client.post(f"/runs/{name}/extend-stall", json={"stall_after_s": 61})
    assert too_long.status_code == 422
    assert "LABRUN_MAX_STALL_AFTER_S" in too_long.json()["detail"]
    longer = client.post(f"/runs/{name}/extend-stall", json={"stall_after_s": 30})
    assert longer.status_code == 200
    assert longer.json()["stall_after_s"] == 30
    time.sleep(3.5)  # past the old limit and its grace: neither stalled nor cancelled
    run = client.get(f"/runs/{name}").json()
    assert run["status"] == "running"
    assert not run["stalled"]
    assert client.post(f"/runs/{name}/cancel").json()["status"] == "cancelled"
    ended = client.post(f"/runs/{name}/extend-stall")
    assert ended.status_code == 409
    assert "only a running run" in ended.json()["detail"]


def test_a_request_may_ask_for_its_own_stall_limit_up_to_the_servers_maximum(make_client) -> None:
    client = make_client(stall_after_s=0.5, stall_grace_s=0.5, max_stall_after_s=100)
    refused = client.post("/runs", json={"overrides": [], "stall_after_s": 101})
    assert refused.status_code == 422
    assert "stall_after_s=101" in refused.json()["detail"]
    run = client.post("/runs", json={"overrides": ["+extra.fake_hang=2.5"], "stall_after_s": 30}).json()
    assert run["stall_after_s"] == 30
    done = wait_for(client, run["name"], timeout=20)
    assert done["status"] == "succeeded"  # 2.5 s of silence is within its own 30 s


def test_a_run_waiting_to_run_again_after_a_preemption_is_not_stalled(make_client) -> None:
    client = make_client(stall_after_s=0.5, stall_grace_s=0.5)
    manager = client.app.state.manager
    name = submit(client, "+extra.fake_hang=60")["name"]
    wait_for(client, name, {"running"})
    with manager._live.cond:  # what the poller notes when the engine requeued it (supervision.py)
        manager._live.requeued[name] = 2
    time.sleep(2.0)
    run = client.get(f"/runs/{name}").json()
    assert run["status"] == "running"
    assert not run["stalled"]
    assert run["waiting_reason"].startswith("requeued")
    with manager._live.cond:  # it runs again: its clock starts now
        manager._live.requeued.pop(name)
    assert wait_until(lambda: stalled(client, name), what="the stall once it runs")
    client.post(f"/runs/{name}/cancel")


@pytest.mark.parametrize("limit", [0.0])
def test_a_stall_limit_of_zero_means_never(make_client, limit: float) -> None:
    client = make_client(stall_after_s=limit)
    run = submit(client, "+extra.fake_hang=1.5")
    assert wait_for(client, run["name"], timeout=20)["status"] == "succeeded"
