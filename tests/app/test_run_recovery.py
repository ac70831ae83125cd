"""Reconcile at start-up: every unfinished run in the store reaches its true status; nothing runs twice."""

from __future__ import annotations

import pytest
from service_helpers import FAKE_TRAINER, queued_record, starts, wait_for

from app.launchers.base import LOST, LaunchSpec
from app.launchers.local import LocalLauncher
from app.models import RunRecord, RunStatus
from app.statedir import StateDir
from app.store import RunStore


def _store(output_dir) -> RunStore:
    return RunStore(output_dir / ".labrun" / "runs.db")


def _queued(store: RunStore, name: str, overrides=("+extra.fake_sleep=0",)) -> RunRecord:
    return store.insert(queued_record(name, overrides, seed=42))


def fail_first_mark_running(store: RunStore) -> None:
    """The store refuses the first queued -> running write (a disk I/O error), then works again."""
    import sqlite3

    mark_running, calls = store.mark_running, []

    def flaky(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return mark_running(*args, **kwargs)

    store.mark_running = flaky


@pytest.fixture
def start_outside_the_service(output_dir):
    """``start(name, *overrides)``: a run started as by a service that then died (its launcher is dropped).
    Its wrapper process is reaped at the end, as init would reap it, not left to the garbage collector."""
    started = []

    def start(name: str, *args: str) -> str:
        launcher = LocalLauncher(FAKE_TRAINER, StateDir(output_dir))
        state = launcher.state.run(name)
        spec = LaunchSpec(
            name=name,
            trainer_args=[*args, f"run_name={name}", f"log_dir={output_dir}"],
            gpus=(),
            output_dir=output_dir,
            state_dir=state,
            log_path=state / "log",
        )
        handle = launcher.start(spec)
        started.append((launcher, name, handle))
        return handle

    yield start
    for launcher, name, handle in started:
        launcher.wait(name, handle, timeout=60)


def test_a_running_run_without_any_trace_fails_as_lost(make_client, output_dir):
    store = _store(output_dir)
    _queued(store, "2026-01-01_00-00-00_ghost")
    store.mark_running("2026-01-01_00-00-00_ghost", "999999:1", [])
    client = make_client()
    run = client.get("/runs/2026-01-01_00-00-00_ghost").json()
    assert run["status"] == "failed"
    assert run["reason"] == LOST
    assert run["exit_code"] is None


def test_a_run_started_but_never_recorded_is_found_not_started_again(
    make_client, output_dir, start_outside_the_service
):
    store = _store(output_dir)
    ended, running, waiting = (
        "2026-01-01_00-00-01_ended",
        "2026-01-01_00-00-02_running",
        "2026-01-01_00-00-03_waiting",
    )
    for name in (ended, running, waiting):
        _queued(store, name)
    # The service was killed after the launcher started these two and before it recorded them as running.
    handle = start_outside_the_service(ended, "+extra.fake_exit=4")
    LocalLauncher(FAKE_TRAINER, StateDir(output_dir)).wait(ended, handle, timeout=30)
    start_outside_the_service(running, "+extra.fake_sleep=1")
    client = make_client(max_cpu_runs=1)
    first = wait_for(client, ended)
    assert first["status"] == "failed"
    assert first["exit_code"] == 4
    assert wait_for(client, running)["status"] == "succeeded"
    assert wait_for(client, waiting)["status"] == "succeeded"
    assert sorted(starts(output_dir)) == sorted([ended, running, waiting])  # each exactly once


def test_a_run_started_but_not_recorded_keeps_its_gpus_and_is_adopted(make_client, output_dir):
    """The store refused queued -> running once (disk full, I/O error) after the process had started: the
    run is found again by name (not failed, not started twice) and keeps the GPUs it was started on."""

    client = make_client(gpus=(0, 1))
    store = client.app.state.manager.store
    gpu = ["accelerator=gpu", "devices=1", "batch_size=16"]
    holder = client.post("/runs", json={"overrides": [*gpu, "+extra.fake_sleep=1", "+extra.fake_i=0"]}).json()
    wait_for(client, holder["name"], {"running"})  # on GPU 0 until about a second from now
    fail_first_mark_running(store)
    first = client.post("/runs", json={"overrides": [*gpu, "+extra.fake_sleep=3", "+extra.fake_i=1"]}).json()
    wait_for(client, holder["name"])  # GPU 0 is free again before the first run is retried
    second = client.post(
        "/runs", json={"overrides": [*gpu, "+extra.fake_sleep=0.5", "+extra.fake_i=2"]}
    ).json()
    done = [wait_for(client, run["name"]) for run in (first, second)]
    assert [run["status"] for run in done] == ["succeeded", "succeeded"], done
    lines = (output_dir / "fake_starts.log").read_text().splitlines()
    visible = {line.split()[0]: line.split()[2].strip("'") for line in lines}
    assert len(lines) == 3  # found again by name, not started a second time
    assert visible[first["name"]] != visible[second["name"]]  # never two runs on one GPU
    for run in done:
        assert visible[run["name"]] == ",".join(map(str, run["gpus"])), run


def test_a_cpu_run_started_but_not_recorded_is_retried_while_it_holds_the_only_slot(make_client, output_dir):

    client = make_client(max_cpu_runs=1)
    store = client.app.state.manager.store
    fail_first_mark_running(store)
    run = client.post("/runs", json={"overrides": ["+extra.fake_sleep=0.5"]}).json()
    done = wait_for(client, run["name"])
    assert done["status"] == "succeeded", done
    assert starts(output_dir) == [run["name"]]


def test_runs_going_under_another_launcher_stop_the_start_with_a_clear_message(make_client, output_dir):
    """LABRUN_LAUNCHER changed (docker -> local) while runs were going: this launcher cannot follow them
    (it crashed on the container id at start-up; the other way round it would call them lost while they
    run on, and hand their GPUs out again)."""
    import pytest

    from app.core.config import SettingsError

    store = _store(output_dir)
    _queued(store, "2026-01-01_00-00-00_in_docker")
    store.mark_running("2026-01-01_00-00-00_in_docker", "3f2a9c0d1e", [], launcher="docker")
    with pytest.raises(SettingsError) as caught:
        make_client()
    message = str(caught.value)
    assert "LABRUN_LAUNCHER" in message
    assert "docker" in message
    assert "2026-01-01_00-00-00_in_docker" in message
    store.finish("2026-01-01_00-00-00_in_docker", [RunStatus.RUNNING], RunStatus.SUCCEEDED, 0)
    make_client()  # once they have ended, the new launcher is fine


def test_the_launcher_that_started_a_run_is_recorded(client):
    run = client.post("/runs", json={"overrides": ["+extra.fake_sleep=0"]}).json()
    wait_for(client, run["name"])
    assert client.app.state.manager.store.get(run["name"]).launcher == "local"
