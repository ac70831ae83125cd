"""GET /metrics: Prometheus' text format, read back with the client library's own parser; the values follow
runs as they are submitted, start and end."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families
from service_process import submit, wait_for
from web_helpers import LONG_S, run_for


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_status(client, name: str, status: str) -> dict:
    return wait_for(client, name, {status}, timeout=30)


def test_metrics_follow_runs(make_client):
    client = make_client(gpus=(0, 1), max_cpu_runs=1)
    before = scrape(client)
    for pool in ("cpu", "gpu"):
        assert value(before, "labrun_queue_length", pool=pool) == 0
        assert value(before, "labrun_runs_running", pool=pool) == 0
    assert value(before, "labrun_gpus", state="free") == 2
    assert value(before, "labrun_gpus", state="busy") == 0
    assert value(before, "labrun_runs_finished_total", status="cancelled") == 0
    assert value(before, "labrun_submission_seconds_count", outcome="queued") == 0
    assert ("process_resident_memory_bytes", ()) in before

    on_gpu = submit(client, *run_for(LONG_S, "accelerator=gpu", "devices=1"))["name"]
    cpu_long = submit(client, *run_for(LONG_S))["name"]
    cpu_queued = submit(client, *run_for(LONG_S))["name"]  # one CPU slot: waits behind cpu_long
    assert client.post("/runs", json={"overrides": ["model=no-such-model"]}).status_code == 422
    wait_status(client, on_gpu, "running")
    wait_status(client, cpu_long, "running")

    during = scrape(client)
    assert value(during, "labrun_queue_length", pool="cpu") == 1
    assert value(during, "labrun_queue_length", pool="gpu") == 0
    assert value(during, "labrun_runs_running", pool="cpu") == 1
    assert value(during, "labrun_runs_running", pool="gpu") == 1
    assert value(during, "labrun_gpus", state="busy") == 1
    assert value(during, "labrun_gpus", state="free") == 1
    assert value(during, "labrun_user_runs", owner="local", status="running") == 2
    assert value(during, "labrun_user_runs", owner="local", status="queued") == 1
    assert value(during, "labrun_submission_seconds_count", outcome="queued") == 3
    assert value(during, "labrun_submission_seconds_count", outcome="refused") == 1
    assert value(during, "labrun_submission_seconds_sum", outcome="queued") > 0
    assert value(during, "labrun_dispatch_seconds_count", pool="gpu") == 1
    assert value(during, "labrun_dispatch_seconds_count", pool="cpu") == 1
    assert value(during, "labrun_dispatch_seconds_bucket", pool="cpu", le="+Inf") == 1

    # Polling a run adds nothing, and a second scrape does not count a start twice.
    for _ in range(5):
        client.get(f"/runs/{on_gpu}")
    again = scrape(client)
    assert value(again, "labrun_dispatch_seconds_count", pool="cpu") == 1
    assert value(again, "labrun_submission_seconds_count", outcome="queued") == 3

    client.post(f"/runs/{cpu_long}/cancel")
    wait_status(client, cpu_long, "cancelled")
    wait_status(client, cpu_queued, "running")  # the queued one takes the slot
    for name in (on_gpu, cpu_queued):
        client.post(f"/runs/{name}/cancel")
        wait_status(client, name, "cancelled")
    short = submit(client, *run_for(0.5))["name"]
    assert wait_for(client, short, timeout=30)["status"] == "succeeded"

    after = scrape(client)
    assert value(after, "labrun_runs_finished_total", status="cancelled") == 3
    assert value(after, "labrun_runs_finished_total", status="succeeded") == 1
    assert value(after, "labrun_runs_finished_total", status="failed") == 0
    for pool in ("cpu", "gpu"):
        assert value(after, "labrun_queue_length", pool=pool) == 0
        assert value(after, "labrun_runs_running", pool=pool) == 0
    assert value(after, "labrun_gpus", state="free") == 2
    assert value(after, "labrun_dispatch_seconds_count", pool="cpu") == 3
    assert value(after, "labrun_user_runs", owner="local", status="running") == 0


def test_runs_started_before_the_service_are_not_counted(make_client):
    first = make_client()
    name = submit(first, *run_for(0.5))["name"]
    wait_for(first, name)
    first.__exit__(None, None, None)
    second = make_client()  # same output directory: the run is history
    samples = scrape(second)
    assert value(samples, "labrun_runs_finished_total", status="succeeded") == 1
    assert value(samples, "labrun_dispatch_seconds_count", pool="cpu") == 0


def test_scrape_cost_with_many_runs(output_dir, make_client):
    """A scrape reads the store (3 counts, the queued and running runs): a few ms, not per stored run."""
    import sqlite3
    from contextlib import closing

    from app.statedir import StateDir
    from app.store import RunStore

    db = StateDir(output_dir).db
    RunStore(db).close()  # the current schema; then years of finished runs, written past the store
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.executemany(
            "INSERT INTO runs (name, status, config_name, overrides, run_dir, gpu_need, created_at,"
            " started_at, finished_at) VALUES (?, 'succeeded', 'neuraloperator', '[]', ?, 0, ?, ?, ?)",
            [(f"old-{i}", f"x/old-{i}", i, i + 1, i + 2) for i in range(20_000)],
        )
    client = make_client()
    scrape(client)
    started = time.perf_counter()
    for _ in range(10):
        samples = scrape(client)
    per_scrape = (time.perf_counter() - started) / 10
    assert value(samples, "labrun_runs_finished_total", status="succeeded") == 20_000
    print(f"/metrics with 20,000 runs stored: {per_scrape * 1000:.1f} ms per scrape (in-process client)")
    assert per_scrape < 0.5
