"""POST /runs/{name}/resume: a failed or cancelled run continues from its last checkpoint as its next
attempt, in the same run directory; the attempt that ended is kept (real processes, the fake trainer)."""

from __future__ import annotations

from service_helpers import starts, submit, wait_for


def test_a_failed_run_resumes_from_its_checkpoint_as_its_next_attempt(client, output_dir):
    run = wait_for(client, submit(client, "+extra.fake_fail_once=3")["name"])
    assert (run["status"], run["exit_code"], run["attempts"]) == ("failed", 3, 1)
    refused = client.post(f"/runs/{run['name']}/resume")
    assert refused.status_code == 409
    assert "no checkpoint" in refused.json()["detail"]
    ckpt = output_dir / run["run_dir"] / "ckpt" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"a checkpoint")  # what the trainer leaves when it saves one
    resumed = client.post(f"/runs/{run['name']}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] in ("queued", "running")
    assert resumed.json()["attempts"] == 2
    done = wait_for(client, run["name"])
    assert (done["status"], done["exit_code"], done["attempts"]) == ("succeeded", 0, 2)
    assert done["run_dir"] == run["run_dir"]
    assert ckpt.exists()
    assert starts(output_dir) == [run["name"], run["name"]]  # one run, two attempts
    earlier = client.get(f"/runs/{run['name']}/attempts").json()["attempts"]
    assert [(a["attempt"], a["status"], a["exit_code"]) for a in earlier] == [(1, "failed", 3)]
    log = client.get(f"/runs/{run['name']}/logs").text
    assert log.count(": line 1") == 2  # both attempts' output, one log
    again = client.post(f"/runs/{run['name']}/resume")
    assert again.status_code == 409
    assert "succeeded" in again.json()["detail"]


def test_the_store_keeps_terminal_statuses_final_except_for_a_resume(tmp_path):
    import sqlite3
    from contextlib import closing

    import pytest
    from service_helpers import queued_record

    from app.models import RunStatus
    from app.store import RunStore

    store = RunStore(tmp_path / "runs.db")
    store.insert(queued_record("a"))
    store.mark_running("a", "1:2", [])
    store.finish("a", [RunStatus.RUNNING], RunStatus.SUCCEEDED, 0)
    assert not store.requeue_attempt("a")  # a succeeded run is not resumed
    # a writer of its own, past the store: the trigger itself refuses
    with (
        closing(sqlite3.connect(store.path)) as raw,
        pytest.raises(sqlite3.IntegrityError, match="terminal status is final"),
    ):
        raw.execute("UPDATE runs SET status = 'queued', attempts = attempts + 1 WHERE name = 'a'")
    store.insert(queued_record("b"))
    store.finish("b", [RunStatus.QUEUED], RunStatus.CANCELLED)
    assert store.requeue_attempt("b")
    assert store.get("b").status == RunStatus.QUEUED
    assert store.get("b").attempts == 2
    assert store.attempts_of("b")[0]["status"] == "cancelled"
