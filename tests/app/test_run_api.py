"""The HTTP API in-process: submit, poll, list, logs, cancel, rerun, idempotency, errors, dispatch."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from service_helpers import starts, submit, wait_for


def test_submit_runs_to_success_with_progress_and_run_dir(client, output_dir):
    run = submit(client, "model=fno", "+extra.fake_sleep=0.2")
    assert run["status"] in ("queued", "running")
    assert run["config_name"] == "neuraloperator"
    assert run["overrides"] == ["model=fno", "+extra.fake_sleep=0.2"]
    assert run["name"].endswith("_fno64x128_+extra.fake_sleep=0.2_model=fno")
    assert run["run_dir"] == f"{run['name'][:10]}/{run['name']}"
    done = wait_for(client, run["name"])
    assert done["status"] == "succeeded", done
    assert done["exit_code"] == 0
    assert done["reason"] is None
    assert done["log_tail"] is None
    assert done["started_at"]
    assert done["finished_at"]
    assert done["gpus"] == []
    assert done["progress"]["fraction"] == 1.0
    assert done["progress"]["step"] == 4
    assert done["metrics"]["train_loss"] == 0.25
    assert (output_dir / done["run_dir"] / "progress.json").is_file()


def test_get_list_and_queue_positions(client):
    first = submit(client, "+extra.fake_sleep=1")
    second = submit(client, "+extra.fake_sleep=0")
    third = submit(client, "+extra.fake_sleep=0")
    wait_for(client, first["name"], {"running"})
    assert client.get(f"/runs/{second['name']}").json()["queue_position"] == 1
    assert client.get(f"/runs/{third['name']}").json()["queue_position"] == 2
    listing = client.get("/runs", params={"limit": 2}).json()
    assert listing["count"] == 3
    assert len(listing["data"]) == 2
    assert [r["name"] for r in listing["data"]] == [third["name"], second["name"]]  # newest first
    assert [r["queue_position"] for r in listing["data"]] == [2, 1]
    running = client.get("/runs", params={"status": "running"}).json()
    assert [r["name"] for r in running["data"]] == [first["name"]]
    assert running["count"] == 1
    assert client.get("/runs", params={"status": "bogus"}).status_code == 422
    for run in (first, second, third):
        assert wait_for(client, run["name"])["status"] == "succeeded"


def test_identical_requests_get_distinct_names(client):
    names = [submit(client, "+extra.fake_sleep=0")["name"] for _ in range(3)]
    assert len(set(names)) == 3
    assert any(n.endswith("_r2") for n in names) or len({n[:19] for n in names}) > 1
    for name in names:
        assert wait_for(client, name)["status"] == "succeeded"


def test_failed_run_has_reason_exit_code_and_log_tail(client):
    run = submit(client, "+extra.fake_exit=3")
    done = wait_for(client, run["name"])
    assert done["status"] == "failed"
    assert done["exit_code"] == 3
    assert "exited with code 3" in done["reason"]
    assert "failing with exit code 3" in done["log_tail"]


def test_logs_tail_and_follow(client):
    run = submit(client, "+extra.fake_lines=5", "+extra.fake_sleep=0.5")
    streamed = client.get(f"/runs/{run['name']}/logs", params={"follow": True}).text  # returns when it ends
    assert streamed.count("line ") == 5
    assert client.get(f"/runs/{run['name']}/logs", params={"tail": 2}).text.splitlines() == [
        f"fake trainer {run['name']}: line 4",
        f"fake trainer {run['name']}: line 5",
    ]
    assert client.get("/runs/nope/logs").status_code == 404


def test_unknown_run_is_404_naming_it(client):
    for response in (
        client.get("/runs/nope"),
        client.post("/runs/nope/cancel"),
        client.post("/runs/nope/rerun"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "no run named 'nope'"}


def test_cancel_queued_and_running_runs(client, output_dir):
    running = submit(client, "+extra.fake_sleep=30")
    queued = submit(client, "+extra.fake_sleep=0")
    wait_for(client, running["name"], {"running"})
    response = client.post(f"/runs/{queued['name']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    started = time.monotonic()
    response = client.post(f"/runs/{running['name']}/cancel")
    assert time.monotonic() - started < 5
    cancelled = response.json()
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["exit_code"] == -15, cancelled
    assert cancelled["reason"].startswith("cancelled by request")
    again = client.post(f"/runs/{running['name']}/cancel")
    assert again.status_code == 409
    assert "already finished (cancelled)" in again.json()["detail"]
    assert queued["name"] not in starts(output_dir)  # a cancelled queued run never starts


def test_cancel_escalates_to_sigkill_when_sigterm_is_ignored(make_client, tmp_path):
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\ntime.sleep(60)\n"
    )
    import sys

    client = make_client(trainer_command=[sys.executable, str(stubborn)], cancel_grace_s=0.5)
    run = submit(client)
    wait_for(client, run["name"], {"running"})
    time.sleep(0.3)
    cancelled = client.post(f"/runs/{run['name']}/cancel").json()
    assert cancelled["status"] == "cancelled", cancelled
    assert cancelled["exit_code"] == -9, cancelled


def test_rerun_keeps_overrides_and_names_the_original(client):
    original = submit(client, "model=fno", "+extra.fake_sleep=0")
    wait_for(client, original["name"])
    response = client.post(f"/runs/{original['name']}/rerun")
    assert response.status_code == 201
    rerun = response.json()
    assert rerun["rerun_of"] == original["name"]
    assert rerun["overrides"] == original["overrides"]
    assert rerun["name"] != original["name"]
    assert wait_for(client, rerun["name"])["status"] == "succeeded"


def test_idempotency_key_returns_the_same_run(client):
    headers = {"Idempotency-Key": "abc-123"}
    first = submit(client, "+extra.fake_sleep=0", headers=headers)
    second = submit(client, "+extra.fake_sleep=0", headers=headers)
    assert first["name"] == second["name"]
    assert client.get("/runs").json()["count"] == 1
    conflict = client.post("/runs", json={"overrides": ["+extra.fake_sleep=1"]}, headers=headers)
    assert conflict.status_code == 409
    assert "Idempotency-Key" in conflict.json()["detail"]
    wait_for(client, first["name"])


def test_concurrent_submissions_get_unique_names_and_no_errors(client):
    with ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(lambda _: client.post("/runs", json={"overrides": ["+extra.fake_sleep=0"]}), range(16))
        )
    assert [r.status_code for r in responses] == [201] * 16
    names = [r.json()["name"] for r in responses]
    assert len(set(names)) == 16
    for name in names:
        assert wait_for(client, name)["status"] == "succeeded"


def test_dispatch_is_fifo_one_cpu_run_at_a_time_and_prompt(client, output_dir):
    names = [submit(client, "+extra.fake_sleep=0.2", f"+extra.fake_i={i}")["name"] for i in range(4)]
    runs = [wait_for(client, n) for n in names]
    assert starts(output_dir) == names
    for before, after in zip(runs, runs[1:], strict=False):
        assert after["started_at"] >= before["finished_at"]  # never two CPU runs at once (MAX_CPU_RUNS=1)
    gaps = [
        dt.datetime.fromisoformat(b["started_at"]) - dt.datetime.fromisoformat(a["finished_at"])
        for a, b in zip(runs, runs[1:], strict=False)
    ]
    assert max(g.total_seconds() for g in gaps) < 0.5, gaps  # event-driven dispatch, no polling interval


def test_gpus_are_never_shared_and_cuda_visible_devices_is_set(make_client, output_dir):
    client = make_client(gpus=(0, 1, 2), max_cpu_runs=2)
    runs = [
        submit(
            client,
            "accelerator=gpu",
            "devices=2",
            "batch_size=16",
            "+extra.fake_sleep=0.4",
            f"+extra.fake_i={i}",
        )
        for i in range(3)
    ]
    cpu = submit(client, "+extra.fake_sleep=0")
    done = [wait_for(client, r["name"]) for r in runs]
    assert all(r["status"] == "succeeded" and len(r["gpus"]) == 2 for r in done)
    for a, b in zip(done, done[1:], strict=False):  # 3 GPUs, 2 per run: strictly one after the other
        assert b["started_at"] >= a["finished_at"]
    assert wait_for(client, cpu["name"])["gpus"] == []
    lines = (output_dir / "fake_starts.log").read_text().splitlines()
    visible = {line.split()[0]: line.split()[2] for line in lines}
    assert visible[cpu["name"]] == "''"
    assert visible[runs[0]["name"]] == repr(",".join(map(str, done[0]["gpus"])))
    too_many = client.post("/runs", json={"overrides": ["accelerator=gpu", "devices=4"]})
    assert too_many.status_code == 422
    assert "has 3" in too_many.json()["detail"]


def test_gpu_run_refused_on_a_cpu_only_server(client):
    response = client.post("/runs", json={"overrides": ["accelerator=gpu"]})
    assert response.status_code == 422
    assert "needs 1 GPU(s)" in response.json()["detail"]
    assert "accelerator=cpu" in response.json()["detail"]


def test_healthz_and_malformed_bodies(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["launcher"] == "local"
    for body in ({"overrides": "model=fno"}, {"overrides": [1]}, {"overrides": [], "extra": 1}, []):
        response = client.post("/runs", json=body)
        assert response.status_code == 422
        assert isinstance(response.json()["detail"], str)
    assert client.get("/runs").json()["count"] == 0


def test_oversized_bodies_are_refused_unread(client):
    response = client.post(
        "/runs", content=b"{" + b" " * (2 << 20) + b"}", headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "request body over" in response.json()["detail"]


def test_a_cancel_survives_a_restart_of_the_service(make_client):
    first = make_client()
    run = submit(first, "+extra.fake_sleep=30")
    wait_for(first, run["name"], {"running"})
    first.app.state.manager.store.request_cancel(run["name"])  # the service died right after noting it
    handle = first.app.state.manager.store.get(run["name"]).handle
    first.__exit__(None, None, None)
    os.kill(int(handle.split(":")[0]), signal.SIGTERM)  # ... and after sending SIGTERM
    second = make_client()
    done = wait_for(second, run["name"])
    assert done["status"] == "cancelled", done


def test_oversized_chunked_bodies_are_refused_too(client):
    def body():
        yield b'{"overrides": ["+x=1"], "config_name": "'
        for _ in range(4):
            yield b"a" * (1 << 19)
        yield b'"}'

    response = client.post("/runs", content=body(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "request body over" in response.json()["detail"]
    small = client.post(
        "/runs",
        content=iter([b'{"overrides": ', b'["+extra.fake_sleep=0"]}']),
        headers={"content-type": "application/json"},
    )
    assert small.status_code == 201, small.text
    wait_for(client, small.json()["name"])


def test_follow_misses_no_line_written_as_it_starts_and_splits_no_character(client, monkeypatch):
    from app.api.routes import runs as routes

    run = submit(client, "+extra.fake_lines=3")
    wait_for(client, run["name"])
    log_path = client.app.state.files.log_path(run["name"])
    real_tail = routes.read_tail

    def tail_then_a_line_arrives(*args, **kwargs):
        text = real_tail(*args, **kwargs)
        with open(log_path, "a", encoding="utf-8") as f:
            f.write("late line: é ✓\n")
        return text

    monkeypatch.setattr(routes, "read_tail", tail_then_a_line_arrives)
    monkeypatch.setattr(routes, "FOLLOW_CHUNK_BYTES", 1)  # multi-byte characters arrive split
    streamed = client.get(f"/runs/{run['name']}/logs", params={"follow": True}).text
    assert streamed.count("late line: é ✓\n") == 1, streamed
    assert streamed.count(": line ") == 3


def test_an_odd_progress_file_never_fails_the_poll(client, output_dir):
    """progress.json is another process's file: a value of an unexpected type or a NaN (a diverged loss)
    leaves that field empty instead of making every GET of the run a 500. (A running run: its progress
    is read on every poll; an ended run's is final and looked at again only every few seconds.)"""
    run = submit(client, "+extra.fake_sleep=30")  # its next write of progress.json is 7 s away
    path = output_dir / run["run_dir"] / "progress.json"
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for content in (
        '{"epoch": 1.5, "global_step": "x", "fraction": NaN, "metrics": {"train_loss": NaN, "acc": 0.5}}',
        '{"metrics": [1], "train_loss": Infinity, "updated_at": {"a": 1}, "total_steps": true}',
    ):
        path.write_text(content)
        response = client.get(f"/runs/{run['name']}")
        assert response.status_code == 200, content
        got = response.json()
        assert got["progress"]["epoch"] is None
        assert got["progress"]["fraction"] is None
        assert got["metrics"].get("train_loss") is None
        listed = client.get("/runs")
        assert listed.status_code == 200
    path.write_text('{"metrics": {"train_loss": NaN, "acc": 0.5}}')
    assert client.get(f"/runs/{run['name']}").json()["metrics"] == {"train_loss": None, "acc": 0.5}
    client.post(f"/runs/{run['name']}/cancel")


def test_polled_answers_follow_every_change_and_are_the_models_json(client, output_dir):
    """The polling paths keep each run's JSON while nothing it shows changes (app/api/view.py): a new
    progress.json, a new place in the queue and a new status each show in the next answer, and every
    answer is exactly what the response model would serialize."""
    import json

    from app.api.public import RunPublic, RunsPublic

    def one(name: str) -> dict:
        r = client.get(f"/runs/{name}")
        assert RunPublic.model_validate_json(r.content).model_dump_json().encode() == r.content
        return r.json()

    def listing() -> dict:
        r = client.get("/runs", params={"limit": 10})
        assert RunsPublic.model_validate_json(r.content).model_dump_json().encode() == r.content
        return r.json()

    holder = submit(client, "+extra.fake_sleep=30")
    holder = wait_for(client, holder["name"], {"running"})
    second, third = submit(client, "+extra.fake_sleep=0"), submit(client, "+extra.fake_sleep=0")
    assert [one(second["name"])["queue_position"], one(third["name"])["queue_position"]] == [1, 2]
    assert [r["queue_position"] for r in listing()["data"]] == [2, 1, None]

    progress = output_dir / holder["run_dir"] / "progress.json"
    deadline = time.monotonic() + 10
    while not progress.exists():  # the fake trainer makes the run directory and writes it first
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for step in (7, 8):
        deadline = time.monotonic() + 10
        while (one(holder["name"])["progress"] or {}).get("step") != step:  # the fake trainer writes too
            progress.write_text(json.dumps({"global_step": step, "total_steps": 100, "fraction": step / 100}))
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert listing()["data"][2]["progress"]["step"] == step

    client.post(f"/runs/{second['name']}/cancel")
    assert one(second["name"])["status"] == "cancelled"
    assert one(second["name"])["queue_position"] is None
    assert one(third["name"])["queue_position"] == 1
    assert [r["status"] for r in listing()["data"]] == ["queued", "cancelled", "running"]
    client.post(f"/runs/{holder['name']}/cancel")
    assert wait_for(client, third["name"])["status"] == "succeeded"
    assert [r["status"] for r in listing()["data"]] == ["succeeded", "cancelled", "cancelled"]
    # An ended run's progress.json is final; if it does change (a shared filesystem showing a last write
    # late), the answers show it within seconds (public.RECHECK_S), not never.
    progress.write_text(json.dumps({"global_step": 99, "total_steps": 100}))
    deadline = time.monotonic() + 10
    while (listing()["data"][2]["progress"] or {}).get("step") != 99:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert one(holder["name"])["progress"]["step"] == 99
