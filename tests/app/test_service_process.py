"""The service as a real process: end to end, kill -9 recovery, and the API process never loading torch."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from service_helpers import ROOT, ServiceProcess, service_processes, starts, wait_for


@pytest.fixture
def service(output_dir):
    yield from service_processes(output_dir)


def test_importing_the_service_leaves_the_training_stack_out():
    code = (
        "import sys, app.main, app.__main__, app.lifecycle\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'neuralop', 'wandb')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_end_to_end_with_a_real_service_process(service, output_dir):
    svc = service()
    with svc.client() as client:
        response = client.post(
            "/runs", json={"overrides": ["model=fno", "data=32x64", "+extra.fake_sleep=0.3"]}
        )
        assert response.status_code == 201, response.text
        run = wait_for(client, response.json()["name"])
        assert run["status"] == "succeeded"
        assert (output_dir / run["run_dir"] / "progress.json").is_file()
        with ThreadPoolExecutor(16) as pool:  # many concurrent, identical submissions
            responses = list(
                pool.map(
                    lambda _: client.post("/runs", json={"overrides": ["+extra.fake_sleep=0"]}), range(32)
                )
            )
        assert [r.status_code for r in responses] == [201] * 32
        names = {r.json()["name"] for r in responses}
        assert len(names) == 32
        for name in names:
            assert wait_for(client, name)["status"] == "succeeded"
        assert client.get("/docs").status_code == 200
        assert client.get("/openapi.json").status_code == 200
    second = ServiceProcess(output_dir)  # a second service on the same output dir would run things twice
    result = subprocess.run(
        [sys.executable, "-m", "app"], cwd=ROOT, env=second.env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"another labrun service (pid {svc.proc.pid})" in result.stderr
    maps = Path(f"/proc/{svc.proc.pid}/maps").read_text()
    assert "torch" not in maps
    assert "lightning" not in maps


def test_kill_9_then_restart_recovers_every_run_and_runs_nothing_twice(service, output_dir):
    svc = service(LABRUN_MAX_CPU_RUNS="2")
    with svc.client() as client:
        names = [
            client.post("/runs", json={"overrides": o}).json()["name"]
            for o in (
                [
                    "+extra.fake_sleep=1",
                    "+extra.fake_exit=3",
                ],  # ends while the service is down, with a real failure
                ["+extra.fake_sleep=4"],  # still running at the restart: re-attached
                ["+extra.fake_sleep=0", "+extra.fake_i=1"],  # queued: start after the restart
                ["+extra.fake_sleep=0", "+extra.fake_i=2"],
            )
        ]
        for name in names[:2]:
            wait_for(client, name, {"running"})
        started_b = client.get(f"/runs/{names[1]}").json()["started_at"]
    svc.kill9()
    exit_file = output_dir / ".labrun" / "runs" / names[0] / "exit_code"
    deadline = time.monotonic() + 30
    while not exit_file.exists():  # the first run ends while the service is down
        assert time.monotonic() < deadline, "the first run did not end"
        time.sleep(0.05)
    assert sorted(starts(output_dir)) == sorted(names[:2])  # the two started at once: any order
    svc = service(LABRUN_MAX_CPU_RUNS="2")
    with svc.client() as client:
        a = client.get(f"/runs/{names[0]}").json()
        assert a["status"] == "failed", a
        assert a["exit_code"] == 3, a
        assert "exited with code 3" in a["reason"], a
        b = wait_for(client, names[1])
        assert b["status"] == "succeeded"
        assert b["started_at"] == started_b
        for name in names[2:]:
            assert wait_for(client, name)["status"] == "succeeded"
    assert sorted(starts(output_dir)) == sorted(names)  # each run started exactly once


@pytest.mark.slow
def test_a_tiny_real_training_run_succeeds(service, output_dir):
    svc = service(trainer_command=None)  # the real `python -m trainer`
    overrides = [
        "data=32x64",
        "data.num_examples=32",
        "training.max_epochs=1",
        "model=fno",
        "model.hidden_channels=8",
        "batch_size=8",
        "training.effective_batch_size=8",
        "num_workers=0",
    ]
    with svc.client() as client:
        response = client.post("/runs", json={"overrides": overrides})
        assert response.status_code == 201, response.text
        run = wait_for(client, response.json()["name"], timeout=600)
        log = client.get(f"/runs/{run['name']}/logs", params={"tail": 40}).text
        assert run["status"] == "succeeded", f"{run}\n{log}"
        assert run["progress"]["fraction"] == 1.0
        assert "train_loss" in run["metrics"]
    run_dir = output_dir / run["run_dir"]
    assert run_dir.name == run["name"]
    assert (run_dir / "progress.json").is_file()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["name"] == run["name"]
    assert record["status"] == "succeeded"


def test_ctrl_c_with_a_log_follower_stops_at_once_and_leaves_the_run_going(service):
    import signal
    import threading

    import httpx

    svc = service()
    with svc.client() as client:
        run = client.post("/runs", json={"overrides": ["+extra.fake_sleep=30"]}).json()
        wait_for(client, run["name"], {"running"})
    followed: list[str] = []

    def follow() -> None:
        try:
            with httpx.stream("GET", f"{svc.url}/runs/{run['name']}/logs?follow=true", timeout=60) as r:
                followed.extend(r.iter_text())
            followed.append("<end>")
        except httpx.HTTPError as exc:
            followed.append(f"<error {type(exc).__name__}>")

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(0.5)
    started = time.monotonic()
    svc.proc.send_signal(signal.SIGINT)
    assert svc.proc.wait(timeout=30) == 0
    assert time.monotonic() - started < 3, svc.log()  # not held up by the follower until a timeout
    follower.join(timeout=10)
    assert followed, followed
    assert followed[-1] == "<end>", followed  # the stream ends cleanly
    assert "Traceback" not in svc.log(), svc.log()
    restarted = service()  # the run went on without the service
    with restarted.client() as client:
        assert client.get(f"/runs/{run['name']}").json()["status"] == "running"
        client.post(f"/runs/{run['name']}/cancel")
