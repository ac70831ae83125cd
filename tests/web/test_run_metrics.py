"""GET /runs/{name}/metrics: the curves of a run's metrics.csv (app/metricsfile.py)."""

from __future__ import annotations

import math
from pathlib import Path

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
