"""Reconcile at start-up: every unfinished run in the store reaches its true status; nothing runs twice."""

from __future__ import annotations

import time

from service_helpers import FAKE_TRAINER, starts, wait_for

from app.launchers.base import LOST, LaunchSpec
from app.launchers.local import LocalLauncher
from app.models import RunRecord, RunStatus
from app.store import RunStore


def _store(output_dir) -> RunStore:
    return RunStore(output_dir / ".labrun" / "runs.db")


def _queued(store: RunStore, name: str, overrides=("+fake.sleep=0",)) -> RunRecord:
    return store.insert(
        RunRecord(
            seq=0,
            name=name,
            status=RunStatus.QUEUED,
            config_name="neuraloperator",
            overrides=list(overrides),
            run_dir=f"2026-01-01/{name}",
            gpu_need=0,
            created_at=time.time(),
            seed=42,
        )
    )


def _start_outside_the_service(output_dir, name: str, *args: str) -> str:
    launcher = LocalLauncher(FAKE_TRAINER, output_dir)
    state = launcher.state_dir(name)
    spec = LaunchSpec(
        name=name,
        trainer_args=[*args, f"run_name={name}", f"log_dir={output_dir}"],
        gpus=(),
        output_dir=output_dir,
        state_dir=state,
        log_path=state / "log",
    )
    return launcher.start(spec)


def test_a_running_run_without_any_trace_fails_as_lost(make_client, output_dir):
    store = _store(output_dir)
    _queued(store, "2026-01-01_00-00-00_ghost")
    store.mark_running("2026-01-01_00-00-00_ghost", "999999:1", [])
    client = make_client()
    run = client.get("/runs/2026-01-01_00-00-00_ghost").json()
    assert run["status"] == "failed" and run["reason"] == LOST and run["exit_code"] is None


def test_a_run_started_but_never_recorded_is_found_not_started_again(make_client, output_dir):
    store = _store(output_dir)
    ended, running, waiting = (
        "2026-01-01_00-00-01_ended",
        "2026-01-01_00-00-02_running",
        "2026-01-01_00-00-03_waiting",
    )
    for name in (ended, running, waiting):
        _queued(store, name)
    # The service was killed after the launcher started these two and before it recorded them as running.
    handle = _start_outside_the_service(output_dir, ended, "+fake.exit=4")
    LocalLauncher(FAKE_TRAINER, output_dir).wait(ended, handle, timeout=30)
    _start_outside_the_service(output_dir, running, "+fake.sleep=1")
    client = make_client(max_cpu_runs=1)
    first = wait_for(client, ended)
    assert first["status"] == "failed" and first["exit_code"] == 4
    assert wait_for(client, running)["status"] == "succeeded"
    assert wait_for(client, waiting)["status"] == "succeeded"
    assert sorted(starts(output_dir)) == sorted([ended, running, waiting])  # each exactly once
