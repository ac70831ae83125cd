"""Run chains (docs/run-chains.md): runs that wait for runs and sweeps (``after``), and runs that start from
another run's checkpoint (``init_from``). In-process service, real SQLite, the stand-in trainer as real
processes; the real trainer and a real service process are in test_run_chains_e2e.py."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing

import pytest
from service_helpers import starts, submit, wait_for

from app.lifecycle.dependencies import Dependency, checkpoint_of, judge
from app.store.chains import RunState, SweepState


def post(client, *overrides: str, after=None, path: str = "/runs"):
    body: dict = {"overrides": list(overrides)}
    if after is not None:
        body["after"] = after
    return client.post(path, json=body)


def dep(run: str, state, satisfied) -> dict:
    return {"run": run, "sweep": None, "when": "succeeded", "state": state, "satisfied": satisfied}


def events(output_dir, subject: str) -> list[tuple[str, dict]]:
    with closing(sqlite3.connect(output_dir / ".labrun" / "runs.db")) as db:
        rows = db.execute("SELECT kind, body FROM events WHERE subject = ?", (subject,)).fetchall()
    return [(kind, json.loads(body)) for kind, body in rows]


@pytest.fixture
def client(make_client):
    return make_client(max_cpu_runs=2)  # a free slot: a run that waits does so for its dependency alone


def test_a_run_waits_for_another_to_succeed_then_starts(client, output_dir):
    a = submit(client, "+extra.fake_sleep=2")
    b = post(client, "+extra.fake_sleep=0", after=[{"run": a["name"]}])
    assert b.status_code == 201, b.text
    b = b.json()
    assert b["after"] == [dep(a["name"], None, None)]
    wait_for(client, a["name"], {"running"})
    time.sleep(0.5)  # a free slot all along: only its dependency keeps it queued
    shown = client.get(f"/runs/{b['name']}").json()
    assert shown["status"] == "queued"
    assert shown["waiting_reason"] == f"waiting for run {a['name']} to succeed (it is running)"
    assert shown["queue_position"] is None
    assert shown["after"] == [dep(a["name"], "running", False)]
    listed = client.get("/runs", params={"status": "queued"}).json()["data"]
    assert [r["waiting_reason"] for r in listed] == [shown["waiting_reason"]]
    time.sleep(1.1)  # GET /queue's answer is kept up to a second
    [queued] = client.get("/queue").json()["users"]["local"]["queued"]
    assert (queued["name"], queued["queue_position"]) == (b["name"], None)
    assert queued["waiting_reason"] == shown["waiting_reason"]
    assert wait_for(client, a["name"])["status"] == "succeeded"
    done = wait_for(client, b["name"])
    assert done["status"] == "succeeded"
    assert done["started_at"] >= client.get(f"/runs/{a['name']}").json()["finished_at"]
    assert starts(output_dir) == [a["name"], b["name"]]
    after = client.get(f"/runs/{b['name']}").json()["after"]
    assert after == [dep(a["name"], "succeeded", True)]


def test_a_failure_cancels_the_chain_that_waits_for_it_with_reasons_and_notifications(client, output_dir):
    a = submit(client, "+extra.fake_sleep=1", "+extra.fake_exit=3")
    b = post(client, "+extra.fake_i=1", after=[{"run": a["name"], "when": "succeeded"}]).json()
    c = post(client, "+extra.fake_i=2", after=[{"run": b["name"]}]).json()
    assert wait_for(client, a["name"])["status"] == "failed"
    b_done, c_done = wait_for(client, b["name"]), wait_for(client, c["name"])
    assert (b_done["status"], b_done["reason"]) == (
        "cancelled",
        f"cancelled: run {a['name']} it waits for failed",
    )
    assert (c_done["status"], c_done["reason"]) == (
        "cancelled",
        f"cancelled: run {b['name']} it waits for was cancelled",
    )
    assert b_done["started_at"] is None
    assert c_done["started_at"] is None
    assert starts(output_dir) == [a["name"]]  # neither ever started
    assert [(k, e["reason"]) for k, e in events(output_dir, c["name"])] == [("cancelled", c_done["reason"])]


def test_when_ended_starts_after_a_failure(client):
    a = submit(client, "+extra.fake_sleep=0.5", "+extra.fake_exit=3")
    b = post(client, "+extra.fake_i=1", after=[{"run": a["name"], "when": "ended"}]).json()
    assert wait_for(client, a["name"])["status"] == "failed"
    assert wait_for(client, b["name"])["status"] == "succeeded"


def test_a_queued_run_cancelled_cancels_what_waits_for_it(client):
    a = submit(client, "+extra.fake_sleep=30")  # holds one slot
    b = submit(client, "+extra.fake_sleep=30", "+extra.fake_i=1")  # holds the other
    c = submit(client, "+extra.fake_i=2")  # queued: no slot
    d = post(client, "+extra.fake_i=3", after=[{"run": c["name"]}]).json()
    assert client.post(f"/runs/{c['name']}/cancel").status_code == 200
    done = wait_for(client, d["name"], timeout=10)  # no dispatch round sees it: the watch does
    assert done["reason"] == f"cancelled: run {c['name']} it waits for was cancelled"
    for run in (a, b):
        client.post(f"/runs/{run['name']}/cancel")


def test_a_deleted_dependency_cancels_the_run_that_waits(client):
    a = wait_for(client, submit(client, "+extra.fake_sleep=0")["name"])
    long = submit(client, "+extra.fake_sleep=30", "+extra.fake_i=1")
    b = post(client, "+extra.fake_i=2", after=[{"run": a["name"]}, {"run": long["name"], "when": "ended"}])
    b = b.json()
    assert client.delete(f"/runs/{a['name']}").status_code == 200
    done = wait_for(client, b["name"], timeout=10)
    assert done["reason"] == f"cancelled: run {a['name']} it waits for was deleted"
    client.post(f"/runs/{long['name']}/cancel")


def test_sweeps_wait_and_are_waited_for(client, output_dir):
    a = submit(client, "+extra.fake_sleep=1")
    sweep = post(client, "+extra.fake_val_loss=0.1,0.2", after=[{"run": a["name"]}], path="/sweeps")
    assert sweep.status_code == 201, sweep.text
    sweep = sweep.json()
    last = post(client, "+extra.fake_i=9", after=[{"sweep": sweep["name"]}]).json()
    assert wait_for(client, a["name"])["status"] == "succeeded"
    shown = client.get(f"/runs/{last['name']}").json()
    assert shown["after"][0]["sweep"] == sweep["name"]
    assert wait_for(client, last["name"])["status"] == "succeeded"
    swept = [r["name"] for r in client.get(f"/sweeps/{sweep['name']}").json()["runs"]]
    order = starts(output_dir)
    assert order[0] == a["name"]
    assert order[-1] == last["name"]
    assert sorted(order[1:3]) == sorted(swept)


def test_a_sweep_that_fails_cancels_what_waits_for_its_success(client):
    sweep = post(client, "+extra.fake_val_loss=0.1,0.2", "+extra.fake_exit_if_val_loss=0.2", path="/sweeps")
    name = sweep.json()["name"]
    b = post(client, "+extra.fake_i=1", after=[{"sweep": name}]).json()
    done = wait_for(client, b["name"])
    assert done["reason"] == f"cancelled: sweep {name} it waits for ended with 1 failed run(s)"


@pytest.mark.parametrize(
    ("after", "says"),
    [
        ([{"run": "nope"}], "after[0]: no run named 'nope'"),
        ([{"sweep": "nope"}], "after[0]: no sweep named 'nope'"),
        ([{"run": "A", "when": "soon"}], "after[0].when='soon' is not one of succeeded, ended"),
        ([{"run": "A", "sweep": "S"}], 'after[0] has 2 of run, sweep: write {"run": NAME}'),
        ([{}], "after[0] has 0 of run, sweep"),
        ([{"run": "A"}] * 21, "after names 21 runs and sweeps; at most 20 per request"),
    ],
)
def test_bad_after_is_a_422_naming_it_and_changes_nothing(client, after, says):
    a = wait_for(client, submit(client)["name"])
    after = [{k: (a["name"] if v == "A" else v) for k, v in e.items()} for e in after]
    for path in ("/runs", "/sweeps"):
        response = post(
            client, "+extra.fake_i=1,2" if path == "/sweeps" else "+extra.fake_i=1", after=after, path=path
        )
        assert response.status_code == 422, response.text
        assert says in response.json()["detail"]
    assert client.get("/runs").json()["count"] == 1
    assert client.get("/sweeps").json()["data"] == []


def test_waiting_for_the_success_of_a_run_that_failed_is_refused(client):
    a = wait_for(client, submit(client, "+extra.fake_exit=3")["name"])
    response = post(client, after=[{"run": a["name"]}])
    assert response.status_code == 422
    assert f"run {a['name']} already ended otherwise (failed)" in response.json()["detail"]
    assert post(client, after=[{"run": a["name"], "when": "ended"}]).status_code == 201


def test_a_rerun_does_not_wait(client):
    a = submit(client, "+extra.fake_sleep=1")
    b = post(client, after=[{"run": a["name"], "when": "ended"}]).json()
    wait_for(client, b["name"])
    again = client.post(f"/runs/{b['name']}/rerun").json()
    assert again["after"] is None


# --- init_from ---------------------------------------------------------------------------------------------


def write_checkpoint(output_dir, run: dict) -> None:
    ckpt = output_dir / run["run_dir"] / "ckpt" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"weights")


def test_init_from_needs_an_existing_run_with_a_checkpoint(client, output_dir):
    missing = post(client, "init_from=nope")
    assert missing.status_code == 422
    assert "init_from='nope': no run named 'nope'" in missing.json()["detail"]
    a = wait_for(client, submit(client)["name"])  # the stand-in saves no checkpoint
    quoted = f"init_from='{a['name']}'"
    bare = post(client, quoted)
    assert bare.status_code == 422
    assert "has no checkpoint (ckpt/last.ckpt)" in bare.json()["detail"]
    assert "--after" in bare.json()["detail"]
    path = post(client, "init_from=../../etc")
    assert path.status_code == 422
    assert "init_from" in path.json()["detail"]
    write_checkpoint(output_dir, a)
    ok = post(client, quoted)
    assert ok.status_code == 201, ok.text
    assert ok.json()["init_from"] == a["name"]
    record = client.app.state.manager.store.get(ok.json()["name"])
    spec = client.app.state.manager.dispatcher.spec(record, [])
    expected = (output_dir / a["run_dir"] / "ckpt" / "last.ckpt").resolve()
    assert spec.env["LABRUN_INIT_FROM_CKPT"] == str(expected)
    assert wait_for(client, ok.json()["name"])["status"] == "succeeded"


def test_a_checkpoint_that_is_a_link_is_never_used(client, output_dir):
    a = wait_for(client, submit(client)["name"])
    ckpt = output_dir / a["run_dir"] / "ckpt" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.symlink_to(output_dir / ".labrun" / "runs.db")  # a run could plant this in its own directory
    refused = post(client, f"init_from='{a['name']}'")
    assert refused.status_code == 422
    assert "has no checkpoint" in refused.json()["detail"]
    assert checkpoint_of(output_dir, client.app.state.manager.store.get(a["name"])) is None


def test_init_from_a_run_it_waits_for_is_checked_when_that_run_is_done(client, output_dir):
    a = submit(client, "+extra.fake_sleep=1")
    b = post(client, f"init_from='{a['name']}'", after=[{"run": a["name"]}])
    assert b.status_code == 201, b.text  # no checkpoint yet: looked for when a succeeds
    done = wait_for(client, b.json()["name"])
    assert done["status"] == "cancelled"
    assert (
        done["reason"]
        == f"cancelled: run {a['name']} it starts from (init_from) has no checkpoint (ckpt/last.ckpt)"
    )
    c = submit(client, "+extra.fake_sleep=1", "+extra.fake_i=1")
    d = post(client, f"init_from='{c['name']}'", after=[{"run": c["name"]}]).json()
    progress = output_dir / c["run_dir"] / "progress.json"
    deadline = time.monotonic() + 30
    while not progress.exists():  # its directory is the trainer's to make
        assert time.monotonic() < deadline
        time.sleep(0.02)
    write_checkpoint(output_dir, c)  # what the trainer saves
    d_done = wait_for(client, d["name"])
    assert d_done["status"] == "succeeded", d_done["reason"]


# --- the decision itself ------------------------------------------------------------------------------------


def test_judge():
    runs = {
        "ok": RunState("succeeded", False),
        "bad": RunState("failed", False),
        "on": RunState("running", False),
        "gone": RunState("succeeded", True),
    }
    sweeps = {"s": SweepState({"succeeded": 2, "queued": 1}, False), "t": SweepState({"succeeded": 3}, False)}
    assert judge(
        [Dependency("run", "ok", "succeeded"), Dependency("sweep", "t", "succeeded")], runs, sweeps
    ).ready
    assert judge([Dependency("run", "bad", "ended")], runs, sweeps).ready
    bad = judge([Dependency("run", "ok", "succeeded"), Dependency("run", "bad", "succeeded")], runs, sweeps)
    assert bad.cancel == "cancelled: run bad it waits for failed"
    assert judge([Dependency("run", "gone", "ended")], runs, sweeps).cancel == (
        "cancelled: run gone it waits for was deleted"
    )
    waiting = judge([Dependency("run", "on", "ended"), Dependency("sweep", "s", "succeeded")], runs, sweeps)
    assert not waiting.ready
    assert waiting.cancel is None
    assert waiting.waiting == (
        "waiting for run on to end (it is running); sweep s to succeed (1 of its 3 runs not done)"
    )
