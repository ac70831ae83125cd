"""Faults of the box (issue 15): a full disk, a store that cannot write, an output directory that goes away.
The service keeps going, says what is wrong, loses nothing and recovers by itself, without a restart.

The full-disk test runs on a real, small tmpfs (root mounts one; CI runs as root)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import make_settings, starts, submit, wait_for

from app.errors import InsufficientStorage
from app.main import create_app


@pytest.fixture
def small_disk(tmp_path: Path):
    """An 8 MiB filesystem of its own as the output directory."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_holds_the_queue_says_so_and_everything_resumes_by_itself(small_disk):
    settings = make_settings(small_disk, min_free_bytes=1 << 20, min_free_percent=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        # A writes a log larger than the disk; B waits behind it (one CPU slot).
        a = submit(client, "+extra.fake_huge_line=12000000", "+extra.fake_lines=1")["name"]
        b = submit(client, "+extra.fake_sleep=0")["name"]
        deadline = time.monotonic() + 30
        while client.get("/healthz").status_code == 200:
            assert time.monotonic() < deadline, "the disk never filled"
            time.sleep(0.05)
        health = client.get("/healthz").json()
        assert health["status"] == "degraded"
        assert not health["disk"]["ok"]
        assert "nearly full" in health["disk"]["reason"]
        assert health["disk"]["min_free_bytes"] == 1 << 20
        refused = client.post("/runs", json={"overrides": ["+extra.fake_sleep=0"]})
        assert refused.status_code == 507, refused.text
        assert "DELETE /runs/" in refused.json()["detail"], refused.text
        failed = wait_for(client, a, timeout=30)
        assert failed["status"] == "failed", failed
        assert failed["reason"].startswith("no space left on device"), failed
        time.sleep(0.5)  # B stays queued, with the reason
        waiting = client.get(f"/runs/{b}").json()
        assert waiting["status"] == "queued"
        assert "nearly full" in waiting["waiting_reason"]

        client.app.state.files.log_path(a).write_bytes(b"")  # space is back (an operator cleaned up)
        done = wait_for(client, b, timeout=30)
        assert done["status"] == "succeeded"
        assert done["waiting_reason"] is None
        assert client.get("/healthz").status_code == 200
        assert starts(small_disk) == [a, b]  # nothing ran twice


def test_a_running_run_that_fills_the_disk_is_named_by_healthz_and_in_its_answer(small_disk):
    """Issue 20: when the disk is short because of one run, the service says which (its log, unbounded
    here, holds more than the space that is missing). (B waits for A's CPU slot, not for the disk.)"""
    settings = make_settings(small_disk, min_free_bytes=4 << 20, min_free_percent=0, max_log_bytes=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        a = submit(client, "+extra.fake_huge_line=6000000", "+extra.fake_lines=1", "+extra.fake_sleep=6")
        b = submit(client, "+extra.fake_sleep=0")["name"]
        deadline = time.monotonic() + 30
        while (health := client.get("/healthz")).status_code == 200 or not health.json()["disk"]["run"]:
            assert time.monotonic() < deadline, f"the disk never filled: {health.json()}"
            time.sleep(0.05)
        health = health.json()
        assert health["disk"]["run"] == a["name"]
        assert f"run {a['name']} alone holds" in health["detail"]
        running = client.get(f"/runs/{a['name']}").json()
        assert running["status"] == "running"
        assert "this run's files take" in running["disk_warning"]
        assert client.get(f"/runs/{b}").json()["disk_warning"] is None
        assert wait_for(client, a["name"], timeout=30)["status"] == "succeeded"
        client.app.state.files.log_path(a["name"]).write_bytes(b"")  # space is back
        assert wait_for(client, b, timeout=30)["status"] == "succeeded"
        assert client.get("/healthz").json()["disk"]["run"] is None


def test_watchers_and_the_dispatcher_survive_a_store_that_refuses_writes(client, monkeypatch):
    store = client.app.state.manager.store
    real_finish, real_assign = store.finish, store.assign_gpus
    refusals = {"finish": 3, "pick": 2}

    def flaky_finish(*args, **kwargs):
        if refusals["finish"] > 0:
            refusals["finish"] -= 1
            raise InsufficientStorage("the run store cannot write: database or disk is full")
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(store, "finish", flaky_finish)
    first = wait_for(client, submit(client, "+extra.fake_sleep=0")["name"], timeout=30)
    assert first["status"] == "succeeded"  # shown as ended at once, recorded once the store takes it
    deadline = time.monotonic() + 30
    while store.get(first["name"]).status != "succeeded":
        assert time.monotonic() < deadline, "the outcome was never recorded"
        time.sleep(0.05)
    assert refusals["finish"] == 0
    assert client.app.state.manager.live(first["name"]).ending is None
    # recorded with the time it ended (as shown meanwhile), not the time the store took the write
    shown = dt.datetime.fromisoformat(first["finished_at"]).timestamp()
    assert store.get(first["name"]).finished_at == pytest.approx(shown, abs=0.01)

    real_entries = store.entries

    def flaky_entries(status):
        if refusals["pick"] > 0:
            refusals["pick"] -= 1
            raise InsufficientStorage("the run store cannot write: database or disk is full")
        return real_entries(status)

    monkeypatch.setattr(store, "entries", flaky_entries)
    second = wait_for(client, submit(client, "+extra.fake_sleep=0")["name"], timeout=30)
    assert second["status"] == "succeeded"
    assert refusals["pick"] == 0
    del real_assign


def test_an_output_directory_that_goes_away_and_comes_back(client, output_dir):
    away = output_dir.with_name("outputs-away")
    output_dir.rename(away)  # unmounted, moved: the service cannot use it
    try:
        health = client.get("/healthz")
        assert health.status_code == 503
        assert "is gone" in health.json()["disk"]["reason"]
        refused = client.post("/runs", json={"overrides": ["+extra.fake_sleep=0"]})
        assert refused.status_code == 503
        assert "is gone" in refused.json()["detail"]
        assert client.get("/runs").status_code == 200  # reads keep working
    finally:
        away.rename(output_dir)
    assert client.get("/healthz").status_code == 200
    assert wait_for(client, submit(client, "+extra.fake_sleep=0")["name"])["status"] == "succeeded"


def test_delete_removes_a_finished_runs_files_and_keeps_its_record(client, output_dir):
    run = wait_for(client, submit(client, "+extra.fake_sleep=0")["name"])
    deadline = time.monotonic() + 10
    while run["disk_bytes"] is None:  # measured just after the run's end is recorded (a CI run saw the gap)
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
        run = client.get(f"/runs/{run['name']}").json()
    assert run["disk_bytes"] > 0
    usage = client.get("/usage").json()
    assert usage["disk_bytes"] == run["disk_bytes"]
    assert usage["largest"][0]["name"] == run["name"]
    running = submit(client, "+extra.fake_sleep=30")["name"]
    assert client.delete(f"/runs/{running}").status_code == 409  # only finished runs
    deleted = client.delete(f"/runs/{run['name']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted_at"]
    assert deleted.json()["deleted_by"] == "local"
    assert not (output_dir / run["run_dir"]).exists()
    assert not client.app.state.files.log_path(run["name"]).exists()
    assert client.get(f"/runs/{run['name']}").json()["status"] == "succeeded"  # the record stays
    assert client.delete(f"/runs/{run['name']}").status_code == 200  # repeating it is harmless
    assert client.get("/usage").json()["runs_deleted"] == 1
    assert client.delete("/runs/no-such-run").status_code == 404
