"""GET /runs/{name}/metrics: the curves of a run's metrics.csv (app/metricsfile.py)."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from service_process import submit, wait_for
from web_helpers import run_for

from app.metricsfile import MetricsFiles, downsample


def metrics_csv(output_dir: Path, run: dict) -> Path:
    return output_dir / run["run_dir"] / "metrics.csv"


def test_curves_of_a_finished_run(client, output_dir):
    run = wait_for(client, submit(client, *run_for(0.5))["name"])
    assert run["status"] == "succeeded"
    response = client.get(f"/runs/{run['name']}/metrics")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == run["name"]
    assert body["rows"] == 5  # the fake trainer: a train_loss row per step, then the epoch's row
    train, val = body["metrics"]["train_loss"], body["metrics"]["val_loss"]
    assert train["step"] == [0, 1, 2, 3]
    assert train["epoch"] == [0, 0, 0, 0]
    assert train["value"] == [1.0, 0.5, 1 / 3, 0.25]
    assert (train["points"], train["downsampled"]) == (4, False)
    assert (val["step"], val["value"]) == ([3], [0.5])
    assert set(body["metrics"]) == {"train_loss", "train_loss_epoch", "val_loss"}

    # Polling: the same file answers 304 to its ETag, and a grown file is read again.
    etag = response.headers["ETag"]
    again = client.get(f"/runs/{run['name']}/metrics", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    with metrics_csv(output_dir, run).open("a") as f:
        f.write("1,4,0.125,,\n1,5,nan,,\n1,6,0.1")  # a NaN loss, and a row still being written
    grown = client.get(f"/runs/{run['name']}/metrics", headers={"If-None-Match": etag})
    assert grown.status_code == 200
    body = grown.json()
    assert body["metrics"]["train_loss"]["step"] == [0, 1, 2, 3, 4]
    assert body["skipped"] == 1
    assert body["rows"] == 7


def test_a_run_without_metrics_csv(client, output_dir):
    assert client.get("/runs/no-such-run/metrics").status_code == 404
    run = wait_for(client, submit(client, *run_for(0.5))["name"])
    metrics_csv(output_dir, run).unlink()  # a trainer that logs nothing, or files deleted
    body = client.get(f"/runs/{run['name']}/metrics").json()
    assert body == {"name": run["name"], "rows": 0, "skipped": 0, "max_points": 2000, "metrics": {}}


def test_long_curves_are_downsampled(client, output_dir):
    run = wait_for(client, submit(client, *run_for(0.5))["name"])
    n = 50_000
    with metrics_csv(output_dir, run).open("w") as f:
        f.write("epoch,step,train_loss,train_loss_epoch,val_loss\n")
        for step in range(n):
            loss = 100.0 if step == 31_337 else 1.0 / (1 + step)  # one spike that must survive
            f.write(f"{step // 1000},{step},{loss},,\n")
            if step % 1000 == 999:
                f.write(f"{step // 1000},{step},,{loss},{loss * 2}\n")
    body = client.get(f"/runs/{run['name']}/metrics").json()
    train = body["metrics"]["train_loss"]
    assert train["points"] == n
    assert train["downsampled"]
    assert 1000 < len(train["value"]) <= 2000
    assert train["step"][0] == 0
    assert train["step"][-1] == n - 1
    assert train["step"] == sorted(train["step"])
    assert max(train["value"]) == 100.0
    assert 31_337 in train["step"]
    assert body["metrics"]["val_loss"]["points"] == 50
    assert not body["metrics"]["val_loss"]["downsampled"]
    small = client.get(f"/runs/{run['name']}/metrics", params={"max_points": 100}).json()
    assert len(small["metrics"]["train_loss"]["value"]) <= 100
    assert client.get(f"/runs/{run['name']}/metrics", params={"max_points": 1}).status_code == 422


def test_downsample_keeps_ends_and_extremes():
    values = [math.sin(i / 50) for i in range(10_000)]
    keep = downsample(values, 500)
    assert keep[0] == 0
    assert keep[-1] == 9_999
    assert len(keep) <= 500
    assert keep == sorted(set(keep))
    assert max(values[i] for i in keep) == max(values)
    assert min(values[i] for i in keep) == min(values)
    assert downsample([1.0, 2.0], 500) == [0, 1]


def test_header_rewritten_with_a_new_metric(tmp_path):
    """Lightning rewrites the whole file when a metric appears: the reader starts over."""
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    path = run_dir / "metrics.csv"
    path.write_text("epoch,step,train_loss\n0,0,1.0\n0,1,0.5\n")
    files = MetricsFiles(tmp_path)
    assert files.curves("r")["metrics"]["train_loss"]["value"] == [1.0, 0.5]
    path.write_text("epoch,step,train_loss,val_loss\n0,0,1.0,\n0,1,0.5,\n0,1,,0.7\n0,2,0.25,\n")
    curves = files.curves("r")["metrics"]
    assert curves["train_loss"]["value"] == [1.0, 0.5, 0.25]
    assert curves["val_loss"]["value"] == [0.7]


# --- a big metrics.csv: read by the reader process, answered meanwhile with a sampled curve -----------------

BIG_ROWS = 200_000  # ~6 MB: above the service's in-process bound (4 MiB), read by its reader process


def write_big(path: Path, rows: int = BIG_ROWS, start: int = 0) -> None:
    """Lightning-like rows: a train_loss a step, an epoch's row every 1000 steps."""
    lines = [] if start else ["epoch,step,train_loss,train_loss_epoch,val_loss\n"]
    for step in range(start, start + rows):
        lines.append(f"{step // 1000},{step},{1 / (1 + step * 1e-3) + (step % 7) * 1e-3},,\n")
        if step % 1000 == 999:
            lines.append(f"{step // 1000},{step},,{1 / (1 + step * 1e-3)},{2 / (1 + step * 1e-3)}\n")
    with path.open("a" if start else "w") as f:
        f.write("".join(lines))


def reader_pids(parent: int) -> list[int]:
    """The metrics.csv reader processes that ``parent`` started (and has not reaped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:"))
        if ppid == parent and b"app.curves.worker" in cmdline:
            found.append(int(entry.name))
    return found


def full_curves(client, name: str, timeout: float = 60, **params) -> httpx.Response:
    """Poll the curves until they are the full ones (not ``partial``)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/runs/{name}/metrics", params=params)
        assert response.status_code == 200, response.text
        if not response.json().get("partial"):
            return response
        assert time.monotonic() < deadline, "still partial"
        time.sleep(0.1)


def expected(output_dir: Path, run: dict, max_points: int = 2000) -> dict:
    """What the service's in-process read makes of the file (the definition's tests are test_metric_curves)."""
    return {"name": run["name"], **MetricsFiles(output_dir).curves(run["run_dir"], max_points)}


@pytest.fixture
def big_run(client, output_dir) -> tuple[dict, int]:
    """A run whose metrics.csv is big, read once by the service (so its reader process runs, idle), and
    that process's pid."""
    run = wait_for(client, submit(client, *run_for(0.5))["name"])
    write_big(metrics_csv(output_dir, run))
    assert full_curves(client, run["name"]).json() == expected(output_dir, run)
    (pid,) = reader_pids(os.getpid())
    return run, pid


def test_a_big_file_is_sampled_at_once_then_read_whole(client, output_dir, big_run):
    """While the reader process reads (held stopped here), the answer is a partial curve, at once, and every
    other request is answered; rows appended meanwhile are in the full answer that follows."""
    run, pid = big_run
    other = wait_for(client, submit(client, *run_for(0.5))["name"])
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        first = client.get(f"/runs/{run['name']}/metrics", params={"max_points": 500})
        took = time.monotonic() - started
        for path in ("/healthz", f"/runs/{other['name']}", f"/runs/{other['name']}/metrics"):
            started = time.monotonic()
            assert client.get(path).status_code == 200
            assert time.monotonic() - started < 1.0, path
        write_big(metrics_csv(output_dir, run), rows=1000, start=BIG_ROWS)  # the run goes on
    finally:
        os.kill(pid, signal.SIGCONT)
    assert took < 2.0
    assert first.status_code == 200
    assert "ETag" not in first.headers  # the next poll gets the full curves, not a 304
    body = first.json()
    assert body["partial"] is True
    assert abs(body["estimated_rows"] - (BIG_ROWS + BIG_ROWS // 1000)) < BIG_ROWS * 0.05
    train = body["metrics"]["train_loss"]
    assert train["step"][0] == 0
    assert train["step"][-1] == BIG_ROWS - 1  # it spans the run: its last piece ends at the file's end
    assert len(train["value"]) <= 500

    full = full_curves(client, run["name"], max_points=500)
    assert "ETag" in full.headers
    assert "partial" not in full.json()
    assert full.json() == expected(output_dir, run, 500)
    assert full.json()["metrics"]["train_loss"]["step"][-1] == BIG_ROWS + 999


def test_a_killed_reader_is_an_error_once_then_read_afresh(client, output_dir, big_run):
    run, pid = big_run
    os.kill(pid, signal.SIGSTOP)
    assert client.get(f"/runs/{run['name']}/metrics", params={"max_points": 300}).json()["partial"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (
        response := client.get(f"/runs/{run['name']}/metrics", params={"max_points": 300})
    ).status_code == 200:
        assert response.json()["partial"]
        assert time.monotonic() < deadline, "no error after the reader died"
        time.sleep(0.05)
    assert response.status_code == 503
    assert "reader process was killed (SIGKILL)" in response.json()["detail"]
    assert "ask again" in response.json()["detail"]
    full = full_curves(client, run["name"], max_points=300)
    assert full.json() == expected(output_dir, run, 300)
    assert reader_pids(os.getpid()) not in ([], [pid])  # a fresh process read it


def test_no_reader_process_outlives_the_service(service, output_dir):
    """``python -m app`` stopped while its reader process is mid-read (held stopped): the process is gone."""
    run = wait_for(service.http, submit(service.http, *run_for(0.5))["name"])
    write_big(metrics_csv(output_dir, run))
    full_curves(service.http, run["name"])
    (pid,) = reader_pids(service.proc.pid)
    os.kill(pid, signal.SIGSTOP)
    assert service.http.get(f"/runs/{run['name']}/metrics", params={"max_points": 100}).json()["partial"]
    service.stop()
    assert "Application shutdown complete" in service.log(), service.log(3000)
    assert not Path(f"/proc/{pid}").exists()
    assert "Traceback" not in service.log()
