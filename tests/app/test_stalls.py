"""Stalled runs (app/lifecycle/stalls.py) through the in-process service and the stand-in trainer: a run
that stops writing progress and output is stalled, then cancelled with the reason after the grace period;
its owner can extend it; a run that keeps logging is never stalled; a run waiting after a preemption is not
executing, so it cannot stall. Through a real service process killed with SIGKILL and started again: a
pending stall is neither forgotten nor hastened, and a decided cancel is carried out with its reason. (The
GPU rule is tested with the GPU guard's fake NVML: tests/app/test_gpu_guard.py.)"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import pytest
from service_helpers import ServiceProcess, cancel_all, submit, wait_for
from service_process import wait_until


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


# --- a restart of the service (kill -9): the stall clock and the cancel decision are kept ----------------


def _at(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def test_a_pending_stall_cancel_survives_a_restart_neither_forgotten_nor_early(output_dir) -> None:
    """Stalled, then the service is killed before the grace period ends: the new one shows the same stall
    and cancels at the same time (not a full limit and grace after its start, and not before)."""
    limit, grace = 3.0, 5.0
    svc = ServiceProcess(
        output_dir, LABRUN_STALL_AFTER_S=str(limit), LABRUN_STALL_GRACE_S=str(grace), LABRUN_MAX_CPU_RUNS="2"
    ).start()
    try:
        name = submit(svc.http, "+extra.fake_hang=120")["name"]
        wait_for(svc.http, name, {"running"})
        before = wait_until(lambda: stalled(svc.http, name), what="the stall")["stall"]
        svc.kill9()
        svc.start()
        restarted = time.time()
        again = wait_until(lambda: stalled(svc.http, name), what="the stall after the restart")["stall"]
        assert again["message"].startswith("no progress and no output for ")
        # the same stall: read back from the files' times, at most one look (0.3 s) later, never earlier
        assert 0 <= _at(again["cancel_at"]) - _at(before["cancel_at"]) <= 0.5, (before, again)
        ended = svc.wait_for(name, timeout=30)
        cancelled_at = time.time()
        assert ended["status"] == "cancelled"
        assert ended["reason"].startswith("cancelled: stalled, no progress and no output for ")
        assert cancelled_at >= _at(before["cancel_at"])  # not early
        assert cancelled_at - restarted < limit + grace - 1.0, "a full limit and grace again"
    finally:
        cancel_all(svc.http)
        svc.stop()


def test_a_decided_stall_cancel_is_carried_out_after_a_restart_with_its_reason(output_dir) -> None:
    """The watcher decided to cancel a run that ignores SIGTERM, and the service died during the cancel's
    grace period: the next one carries the cancel out at once and records the stall's reason. A second run,
    killed while the service was down, is recorded with its stall's reason too."""
    svc = ServiceProcess(
        output_dir,
        LABRUN_STALL_AFTER_S="1",
        LABRUN_STALL_GRACE_S="1",
        LABRUN_CANCEL_GRACE_S="120",  # SIGTERM ignored: the cancel waits this long before its SIGKILL
        LABRUN_MAX_CPU_RUNS="2",
    ).start()
    try:
        hung = ("+extra.fake_hang=300", "+extra.fake_on_term=ignore")
        names = [submit(svc.http, *hung, f"+extra.n={i}")["name"] for i in range(2)]
        for name in names:
            wait_for(svc.http, name, {"running"})
        wait_until(
            lambda: all(f"run {n}: cancelled: stalled" in svc.log() for n in names),
            what="both cancels decided",
        )
        assert all(svc.http.get(f"/runs/{n}").json()["status"] == "running" for n in names)
        svc.kill9()
        pids = {
            n: int((output_dir / ".labrun" / "runs" / n / "child_pid").read_text().split()[0]) for n in names
        }
        os.kill(pids[names[1]], signal.SIGKILL)  # the second one ends while the service is down
        svc.env["LABRUN_CANCEL_GRACE_S"] = "1"
        svc.env["LABRUN_STALL_AFTER_S"] = "600"  # a fresh look would take 10 minutes: only the kept decision
        svc.start()
        restarted = time.time()
        for name in names:
            ended = svc.wait_for(name, timeout=30)
            assert ended["status"] == "cancelled", ended
            assert ended["reason"].startswith("cancelled: stalled, no progress and no output for "), ended
        assert time.time() - restarted < 15
        assert f"run {names[0]}: carrying out the stall cancel decided before the restart" in svc.log()
    finally:
        cancel_all(svc.http)
        svc.stop()
