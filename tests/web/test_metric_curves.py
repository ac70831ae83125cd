"""The streaming curves of app/metricsfile.py against their plain definition, and their bounds: memory that
does not grow with the file, and one file's read that holds no other file's curves up."""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from app import metricsfile
from app.metricsfile import MetricsFiles, downsample

COLUMNS = ["epoch", "step", "train_loss", "train_loss_epoch", "val_loss"]


def plain_curves(text: str, max_points: int) -> dict:
    """The answer by definition: every complete non-blank row parsed one by one, then ``downsample``."""
    lines = text.split("\n")[:-1]  # the part after the last newline is a row still being written
    columns = [c.strip() for c in lines[0].strip().split(",")]
    series: dict[str, list[tuple[float, float | None, float]]] = {}
    rows = skipped = 0
    for line in lines[1:]:
        if not line.strip():
            continue
        cells = line.split(",")
        step, epoch = (number(cells, columns.index(axis)) for axis in ("step", "epoch"))
        x = step if step is not None else float(rows)
        rows += 1
        for at, name in enumerate(columns):
            if name in ("epoch", "step") or at >= len(cells) or not cells[at].strip():
                continue
            value = number(cells, at)
            if value is None:
                skipped += 1
            else:
                series.setdefault(name, []).append((x, epoch, value))
    metrics = {}
    for name, points in series.items():
        keep = downsample([p[2] for p in points], max_points)
        metrics[name] = {
            "step": [points[i][0] for i in keep],
            "epoch": [points[i][1] for i in keep],
            "value": [points[i][2] for i in keep],
            "points": len(points),
            "downsampled": len(keep) < len(points),
        }
    return {"rows": rows, "skipped": skipped, "max_points": max_points, "metrics": metrics}


def number(cells: list[str], at: int) -> float | None:
    try:
        value = float(cells[at])
    except (ValueError, IndexError):
        return None
    return value if math.isfinite(value) else None


def random_csv(rng: random.Random, rows: int) -> str:
    """Lightning-like rows (a loss per step, epoch rows), with the odd NaN, inf, garbage, blank or short row,
    and sometimes \\r\\n endings and a last row cut mid-write."""
    end = "\r\n" if rng.random() < 0.3 else "\n"
    out = [",".join(COLUMNS) + end]
    for step in range(rows):
        loss = rng.choice([rng.random(), rng.random(), round(rng.random(), 1), 5.0])
        cells = [str(step // 50), str(step), repr(loss), "", ""]
        odd = rng.random()
        if odd < 0.02:
            cells[2] = rng.choice(["nan", "inf", "-inf", "x1", " "])
        elif odd < 0.03:
            cells = cells[:3]  # a short row
        elif odd < 0.04:
            out.append(end)  # a blank line
        elif odd < 0.05:
            cells[1] = "?"  # no step: the row's number places it
        out.append(",".join(cells) + end)
        if step % 50 == 49:
            out.append(f"{step // 50},{step},,{rng.random()},{rng.random()}{end}")
    text = "".join(out)
    return text + ("7,123,0.5" if rng.random() < 0.5 else "")


@pytest.mark.parametrize("seed", range(12))
def test_streaming_curves_are_the_plain_definition(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    text = random_csv(rng, rng.choice([5, 40, 300, 2500]))
    max_points = rng.choice([10, 11, 25, 64, 2000])
    (tmp_path / "r").mkdir()
    path = tmp_path / "r" / "metrics.csv"
    expected = plain_curves(text, max_points)

    # Read at once, in blocks of a few lines.
    path.write_text(text, newline="")
    whole = MetricsFiles(tmp_path, chunk_bytes=rng.choice([64, 1000, 1 << 20]))
    assert whole.curves("r", max_points) == expected

    # Read while it grows, in random pieces (a poll may land mid-row): the same answer at the end.
    growing = MetricsFiles(tmp_path, chunk_bytes=rng.choice([64, 1000, 1 << 20]))
    cuts = sorted(rng.sample(range(len(text)), min(len(text), 8)))
    for cut in [*cuts, len(text)]:
        path.write_text(text[:cut], newline="")
        os.utime(path, ns=(cut, cut))  # a fresh mtime each time, as a writer's
        got = growing.curves("r", max_points)
        if "\n" in text[:cut]:  # the header is whole
            assert got == plain_curves(text[:cut], max_points)
    assert got == expected


def test_curve_keeps_a_bounded_number_of_points() -> None:
    """A million points fed a block at a time: the buckets never outnumber (max_points - 2) / 2."""
    from app.metricsfile import Curve, bucket_exponent

    rng = random.Random(1)
    curve, values, max_points = Curve(2000), [], 2000
    for _ in range(100):
        block = [rng.random() for _ in range(10_000)]
        values.extend(block)
        start = len(values) - len(block)
        curve.add(block, lambda j, start=start: (float(start + j), None))
        assert len(curve.buckets) <= (max_points - 2) // 2
        assert len(curve.points()) <= max_points
    assert bucket_exponent(len(values), max_points) == curve.k
    assert [p[0] for p in curve.points()] == downsample(values, max_points)


def test_a_long_file_costs_no_memory_per_row(tmp_path: Path) -> None:
    """A 300,000-row file (9 MB): read with a few MB at the peak, and only the kept points stay cached
    (parsing the rows into Python floats and keeping them, as before, takes some 30 MB; 100 MB a million)."""
    (tmp_path / "r").mkdir()
    with open(tmp_path / "r" / "metrics.csv", "w") as f:
        f.write(",".join(COLUMNS) + "\n")
        block = 10_000
        for start in range(0, 300_000, block):
            f.write("".join(f"{s // 1000},{s},{1 / (1 + s)},,\n" for s in range(start, start + block)))
    files = MetricsFiles(tmp_path)
    tracemalloc.start()
    try:
        body = files.curves("r")
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    train = body["metrics"]["train_loss"]
    assert body["rows"] == 300_000
    assert train["points"] == 300_000
    assert train["step"][0] == 0
    assert train["step"][-1] == 299_999
    assert len(train["step"]) <= 2000
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MB"
    assert kept < 4 * 2**20, f"kept {kept / 2**20:.1f} MB"


def test_one_file_being_read_holds_no_other_file_up(tmp_path: Path, monkeypatch) -> None:
    """Run a's metrics.csv is read slowly (its read waits, as a huge file's does) while run b's curves are
    answered."""
    for run, loss in (("a", 2.0), ("b", 1.0)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.csv").write_text(f"epoch,step,train_loss\n0,0,{loss}\n")
    release = threading.Event()
    real_read = metricsfile._read

    def slow_for_a(state, path, chunk_bytes, **bounds):
        if "/a/" in str(path):
            release.wait(30)
        return real_read(state, path, chunk_bytes, **bounds)

    monkeypatch.setattr(metricsfile, "_read", slow_for_a)
    files = MetricsFiles(tmp_path)
    got: dict[str, dict] = {}
    reader = threading.Thread(target=lambda: got.setdefault("a", files.curves("a")), daemon=True)
    reader.start()
    b: dict[str, dict] = {}
    other = threading.Thread(target=lambda: b.setdefault("b", files.curves("b")), daemon=True)
    other.start()
    other.join(timeout=10)
    blocked = other.is_alive()
    release.set()
    reader.join(timeout=10)
    other.join(timeout=10)
    assert not blocked, "b's curves waited for a's read"
    assert b["b"]["metrics"]["train_loss"]["value"] == [1.0]
    assert got["a"]["metrics"]["train_loss"]["value"] == [2.0]


def test_a_link_or_a_pipe_a_run_leaves_is_not_followed(tmp_path: Path) -> None:
    """A run's code is untrusted: its metrics.csv may be a link to a file of the service's, or a pipe
    that would hold a service thread for ever. Neither is read: no curve."""
    secret = tmp_path / "secret.csv"
    secret.write_text("epoch,step,train_loss\n0,0,42.0\n")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "metrics.csv").symlink_to(secret)
    (tmp_path / "piped").mkdir()
    os.mkfifo(tmp_path / "piped" / "metrics.csv")
    files = MetricsFiles(tmp_path)
    assert files.curves("linked")["metrics"] == {}
    started = time.monotonic()
    assert files.curves("piped")["metrics"] == {}
    assert time.monotonic() - started < 5  # not a read that waits for a writer


def test_a_runs_progress_file_is_not_followed_out_of_its_directory(tmp_path: Path) -> None:
    """progress.json as a link to a file of the service's, a pipe, or a huge file: none is read."""
    from app.runfiles import MAX_PROGRESS_BYTES, RunFiles
    from app.statedir import StateDir

    files = RunFiles(StateDir(tmp_path))
    good = {"epoch": 1, "global_step": 2, "total_steps": 4}
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "progress.json").write_text(json.dumps(good))
    assert files.progress("ok") is not None
    (tmp_path / "secret.json").write_text(json.dumps(good))
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "progress.json").symlink_to(tmp_path / "secret.json")
    assert files.progress("linked") is None
    (tmp_path / "piped").mkdir()
    os.mkfifo(tmp_path / "piped" / "progress.json")
    assert files.progress("piped") is None
    (tmp_path / "huge").mkdir()
    (tmp_path / "huge" / "progress.json").write_text(json.dumps({**good, "pad": "x" * MAX_PROGRESS_BYTES}))
    assert files.progress("huge") is None


def long_csv(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write(",".join(COLUMNS) + "\n")
        f.write("".join(f"{s // 1000},{s},{1 / (1 + s * 1e-3)},,\n" for s in range(rows)))


def test_a_sampled_curve_spans_the_file_in_a_bounded_read(tmp_path: Path) -> None:
    """The partial answer of a 3 MB file reads 64 pieces of 4 KiB: its curve goes from the first row to
    (nearly) the last, on values of the file, and its row count is estimated within a few percent."""
    from app.curves.sample import sample_curves

    long_csv(tmp_path / "r" / "metrics.csv", 100_000)
    body = sample_curves(str(tmp_path / "r" / "metrics.csv"), 2000, blocks=64, block_bytes=4096)
    train = body["metrics"]["train_loss"]
    assert body["partial"] is True
    assert abs(body["estimated_rows"] - 100_000) < 3000
    assert body["rows"] < 64 * 4096 / 20  # only the pieces were read
    assert body["rows"] == train["points"]
    assert train["step"][0] == 0
    assert train["step"][-1] == 99_999  # the last row
    assert train["step"] == sorted(set(train["step"]))
    assert all(v == 1 / (1 + s * 1e-3) for s, v in zip(train["step"], train["value"], strict=True))
    assert sample_curves(str(tmp_path / "none.csv"), 2000)["metrics"] == {}


def test_the_reader_process_reads_as_the_service_does(tmp_path: Path) -> None:
    """A job read by the reader process, installed, then the rows written since read here: the curves a
    read in the service's own process makes. Closing it leaves no process."""
    from app.curves.reader import ReaderProcess

    path = tmp_path / "r" / "metrics.csv"
    long_csv(path, 30_000)
    files = MetricsFiles(tmp_path)
    job = files.answer("r", 500, most=1000)
    assert isinstance(job, metricsfile.ReadJob)
    reader = ReaderProcess()
    try:
        read = reader.submit(job).result(timeout=60)
        pid = reader.pid
    finally:
        reader.close()
    assert pid is not None
    assert not Path(f"/proc/{pid}").exists()
    assert files.install(job, read)
    with open(path, "a") as f:
        f.write("".join(f"30,{s},{1 / (1 + s)},,\n" for s in range(30_000, 30_100)))
    assert files.curves("r", 500) == MetricsFiles(tmp_path).curves("r", 500)
    assert files.curves("r", 500)["rows"] == 30_100


def test_the_reader_process_imports_no_web_framework() -> None:
    """It starts fast and small: the curve module and the standard library, not the app's import graph."""
    import subprocess
    import sys

    probe = "import sys, app.curves.worker; print(' '.join(sys.modules))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert "app.metricsfile" in loaded
    heavy = {
        "fastapi",
        "starlette",
        "pydantic",
        "sqlite3",
        "torch",
        "hydra",
        "app.api",
        "app.store",
        "app.main",
    }
    assert not heavy & loaded
