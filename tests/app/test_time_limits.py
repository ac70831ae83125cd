"""Time limits (docs/time-limits.md), through a real service process with the stand-in trainer (it saves
ckpt/last.ckpt and exits 75 on a SIGTERM without the cancel marker, as the trainer does), on the real
clock: limits of a few seconds, the checkpoint asked for one second before (LABRUN_TIME_LIMIT_SAVE_S)."""

from __future__ import annotations

import csv
import sqlite3
import time
from collections.abc import Iterator

import pytest
from service_helpers import service_processes, wait_for
from service_process import wait_until

from app.errors import InvalidRun
from app.lifecycle.timelimits import extended_limit, limit_for, remaining, running_time
from app.store import QueueEntry
from labrun.durations import format_duration, parse_duration

FAST = {
    "LABRUN_TIME_LIMIT_SAVE_S": "1",
    "LABRUN_TIME_LIMIT_WARN_S": "2",
    "LABRUN_MAX_CPU_RUNS": "1",
    "LABRUN_PREEMPT_MIN_RUN_S": "0",
    "LABRUN_PREEMPT_GRACE_S": "2",
}
SLOW = "+extra.fake_sleep=60"


@pytest.fixture
def service(output_dir) -> Iterator:
    yield from service_processes(output_dir, cancel_at_end=True, **FAST)


def post(client, *overrides: str, **body) -> dict:
    response = client.post("/runs", json={"overrides": list(overrides), **body})
    assert response.status_code == 201, response.text
    return response.json()


def started(client, name: str) -> dict:
    """Until the run's stand-in is past its start-up (its SIGTERM handler is in place)."""
    wait_for(client, name, {"running"})
    wait_until(lambda: ": line 1" in client.get(f"/runs/{name}/logs").text, what=f"{name}'s first line")
    return client.get(f"/runs/{name}").json()


def events(output_dir, kind: str) -> list[tuple[str, str]]:
    with sqlite3.connect(output_dir / ".labrun" / "runs.db") as db:
        return db.execute("SELECT subject, body FROM events WHERE kind = ? ORDER BY seq", (kind,)).fetchall()


# --- the rules -------------------------------------------------------------------------------------------


def test_durations_are_read_as_people_write_them():
    assert [parse_duration(v) for v in ("6h", "90m", "1h30m", "2d", "45s", "3600", 7.5)] == [
        21_600,
        5_400,
        5_400,
        172_800,
        45,
        3_600,
        7.5,
    ]
    for bad in ("6 hours", "h", "0", "-5", "nan", ""):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert [format_duration(s) for s in (21_600, 5_400, 90_000, 59.6, 3_601)] == [
        "6 h",
        "1 h 30 min",
        "1 d 1 h",
        "1 min",
        "1 h",
    ]


def test_the_limit_a_run_gets_and_what_its_owner_may_ask():
    assert limit_for(None, None, None, "ann") is None  # no limit anywhere: none, as before
    assert limit_for(None, 7200, None, "ann") == 7200  # a user with a maximum: their runs have one
    assert limit_for(None, 7200, 3600, "ann") == 3600  # the server's default, within the maximum
    assert limit_for(None, 1800, 3600, "ann") == 1800
    assert limit_for(600, 7200, 3600, "ann") == 600
    with pytest.raises(InvalidRun, match="over ann's maximum of 2 h: ask for at most 2 h"):
        limit_for(3 * 3600, 7200, None, "ann")
    run = QueueEntry(1, "r", "ann", 0, 1000.0, time_limit_s=3600, ran_s=600)
    assert running_time(run, 1000.0 + 1200) == 1800  # earlier attempts and the current one
    assert remaining(run, 1000.0 + 1200) == 1800
    assert extended_limit(run, 5400, 7200, False, 2200.0, "ann") == 5400
    with pytest.raises(InvalidRun, match="has passed already: the run has run 30 min"):
        extended_limit(run, 1500, 7200, False, 2200.0, "ann")
    with pytest.raises(InvalidRun, match="leaves 2 h 30 min of running time, over ann's maximum of 2 h"):
        extended_limit(run, 1800 + 9000, 7200, False, 2200.0, "ann")
    assert extended_limit(run, 1800 + 9000, 7200, True, 2200.0, "ann") == 10_800  # an admin may


# --- through the service ---------------------------------------------------------------------------------


def test_a_run_at_its_limit_saves_a_checkpoint_stops_with_the_reason_and_a_resume_continues_it(
    service, output_dir
):
    svc = service()
    with svc.client() as client:
        run = post(client, SLOW, time_limit="3s")
        assert run["time_limit_s"] == 3.0
        running = started(client, run["name"])
        assert running["time_limit_at"] is not None
        ended = wait_for(client, run["name"], timeout=30)
        assert ended["status"] == "cancelled", ended
        assert ended["reason"].startswith("time limit of 3 s reached; resumable from its checkpoint"), ended
        assert (output_dir / run["run_dir"] / "ckpt" / "last.ckpt").is_file()
        assert ended["exit_code"] == 75  # it saved its checkpoint and exited by itself, before the kill
        # it never ran past its limit
        ran = _seconds(ended["finished_at"]) - _seconds(ended["started_at"])
        assert 1.5 < ran <= 3.5, ran
        # told before (time_limit_near) and at the end (time_limit_reached, not a plain "cancelled")
        assert [s for s, _ in events(output_dir, "time_limit_near")] == [run["name"]]
        assert [s for s, _ in events(output_dir, "time_limit_reached")] == [run["name"]]
        assert not [s for s, _ in events(output_dir, "cancelled") if s == run["name"]]

        resumed = client.post(f"/runs/{run['name']}/resume", json={"time_limit": "30s"})
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["time_limit_s"] == pytest.approx(ran + 30, abs=0.5)
        assert resumed.json()["ran_s"] == pytest.approx(ran, abs=0.5)
        again = wait_for(client, run["name"], {"running"})
        assert again["attempts"] == 2
        wait_until(
            lambda: "resumed, from ckpt/last.ckpt" in client.get(f"/runs/{run['name']}/logs").text,
            what="the second attempt to start from the checkpoint",
        )
        client.post(f"/runs/{run['name']}/cancel")


def test_a_limit_over_the_users_maximum_is_a_422_naming_it_and_changes_nothing(service):
    svc = service(LABRUN_MAX_RUN_S="3600")
    with svc.client() as client:
        over = client.post("/runs", json={"overrides": [], "time_limit": "2h"})
        assert over.status_code == 422, over.text
        assert "over local's maximum of 1 h: ask for at most 1 h" in over.json()["detail"]
        bad = client.post("/runs", json={"overrides": [], "time_limit": "6 hours"})
        assert bad.status_code == 422
        assert "not a duration" in bad.text
        assert client.get("/runs").json()["count"] == 0
        # no limit asked: the maximum is the run's limit (a user with a maximum has no unlimited runs)
        run = post(client, SLOW)
        assert run["time_limit_s"] == 3600
        sweep = client.post("/sweeps", json={"overrides": ["+extra.fake_i=1,2"], "time_limit": "5m"})
        assert sweep.status_code == 201, sweep.text
        runs = client.get("/runs", params={"status": "queued,running"}).json()["data"]
        assert sorted(r["time_limit_s"] for r in runs) == [300, 300, 3600]


def test_the_owner_extends_a_running_runs_limit_and_it_carries_on(service):
    svc = service()
    with svc.client() as client:
        run = post(client, "+extra.fake_sleep=8", time_limit="3s")
        started(client, run["name"])
        more = client.post(f"/runs/{run['name']}/time-limit", json={"extend_by": "30s"})
        assert more.status_code == 200, more.text
        assert more.json()["time_limit_s"] == 33.0
        assert wait_for(client, run["name"], timeout=30)["status"] == "succeeded"
        done = client.post(f"/runs/{run['name']}/time-limit", json={"time_limit": "1h"})
        assert done.status_code == 409, done.text
        both = client.post(f"/runs/{run['name']}/time-limit", json={"time_limit": "1h", "extend_by": "1h"})
        assert both.status_code == 422


def test_a_preempted_run_does_not_start_its_clock_again(service):
    svc = service()
    with svc.client() as client:
        low = post(client, SLOW, time_limit="6s", priority="low")
        started(client, low["name"])
        time.sleep(2)
        high = post(client, "+extra.fake_sleep=1", priority="high")
        assert wait_for(client, high["name"], timeout=30)["status"] == "succeeded"
        wait_until(lambda: client.get(f"/runs/{low['name']}").json()["attempts"] == 2, what="attempt 2")
        again = wait_for(client, low["name"], {"running"})
        assert again["ran_s"] >= 2, again
        ended = wait_for(client, low["name"], timeout=30)
        assert ended["reason"].startswith("time limit of 6 s reached"), ended
        this_attempt = _seconds(ended["finished_at"]) - _seconds(ended["started_at"])
        assert this_attempt <= 6 - again["ran_s"] + 0.5, (this_attempt, again["ran_s"])


def test_a_run_that_reaches_its_limit_while_the_service_is_down_is_recorded_as_such(service):
    svc = service()
    with svc.client() as client:
        run = post(client, SLOW, time_limit="3s")
        started(client, run["name"])
    svc.kill9()
    time.sleep(4)  # it passed its limit meanwhile: nothing stopped it
    svc.start()
    with svc.client() as client:
        ended = wait_for(client, run["name"], timeout=30)
    assert ended["status"] == "cancelled", ended
    assert ended["reason"].startswith("time limit of 3 s reached"), ended


def test_the_real_trainer_at_its_limit_saves_a_checkpoint_and_a_resume_finishes_it(service, output_dir):
    from tiny_run import tiny_run

    epochs = 40  # long enough that the stop comes in the middle of training, even on an idle machine
    # the real `python -m trainer`, on the CPU, with 30 s to reach a safe point and save its checkpoint
    svc = service(trainer_command=None, LABRUN_TIME_LIMIT_SAVE_S="30")
    with svc.client() as client:
        run = post(client, *tiny_run(epochs=epochs, examples=32), "deterministic=true", time_limit="1h")
        name = run["name"]
        wait_until(
            lambda: ((client.get(f"/runs/{name}").json().get("progress") or {}).get("epoch") or 0) >= 2,
            timeout=300,
            what="its third epoch",
        )
        now = client.get(f"/runs/{name}").json()
        ran = time.time() - _seconds(now["started_at"])
        # its limit brought to 31 s from now: asked at once to save and stop (LABRUN_TIME_LIMIT_SAVE_S)
        changed = client.post(f"/runs/{name}/time-limit", json={"time_limit": ran + 31})
        assert changed.status_code == 200, changed.text
        ended = wait_for(client, name, timeout=120)
        assert ended["status"] == "cancelled", ended
        assert ended["reason"].startswith(f"time limit of {format_duration(ran + 31)} reached; resumable"), (
            ended
        )
        assert f"of {epochs})" in ended["reason"], ended
        assert ended["exit_code"] == 75, ended
        assert (output_dir / run["run_dir"] / "ckpt" / "last.ckpt").is_file()

        assert client.post(f"/runs/{name}/resume", json={"time_limit": "1h"}).status_code == 200
        done = wait_for(client, name, timeout=600)
        assert (done["status"], done["attempts"]) == ("succeeded", 2), done
    with open(output_dir / run["run_dir"] / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val_epochs = [int(r["epoch"]) for r in rows if r["val_loss"]]
    assert val_epochs == list(range(epochs)), val_epochs  # no epoch repeated or skipped
    steps = [int(r["step"]) for r in rows if r["train_loss"]]
    assert steps == sorted(set(steps)), steps  # each step once, in order


def _seconds(stamp: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(stamp).timestamp()


def test_only_its_owner_and_an_admin_change_a_limit_and_only_an_admin_beyond_the_maximum(
    output_dir, make_client
):
    from test_users_and_fair_share import bearer, make_users

    tokens = make_users(output_dir, ann=False, bob=False, root=True)
    ann, bob, root = (bearer(tokens[n]) for n in ("ann", "bob", "root"))
    client = make_client(max_run_s=3600)
    run = client.post("/runs", json={"overrides": [SLOW], "time_limit": "30m"}, headers=ann).json()
    name = run["name"]
    assert run["time_limit_s"] == 1800
    other = client.post(f"/runs/{name}/time-limit", json={"extend_by": "10m"}, headers=bob)
    assert other.status_code == 403, other.text
    over = client.post(f"/runs/{name}/time-limit", json={"time_limit": "2h"}, headers=ann)
    assert over.status_code == 422
    assert "over ann's maximum of 1 h" in over.json()["detail"]
    assert client.get(f"/runs/{name}", headers=ann).json()["time_limit_s"] == 1800  # nothing changed
    assert client.post(f"/runs/{name}/time-limit", json={"extend_by": "30m"}, headers=ann).status_code == 200
    lifted = client.post(f"/runs/{name}/time-limit", json={"no_limit": True}, headers=ann)
    assert lifted.status_code == 403, lifted.text
    beyond = client.post(f"/runs/{name}/time-limit", json={"time_limit": "8h"}, headers=root)
    assert beyond.status_code == 200, beyond.text
    assert beyond.json()["time_limit_s"] == 8 * 3600
    assert (
        client.post(f"/runs/{name}/time-limit", json={"no_limit": True}, headers=root).json()["time_limit_s"]
        is None
    )
    client.post(f"/runs/{name}/cancel", headers=ann)
