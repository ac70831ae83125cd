"""The store's start-up check (issue 20): SQLite's quick check of a store of 100,000 runs, and the whole
``open_store`` the service runs before it serves, as a fresh process would do it (the file not in SQLite's
cache; the operating system's page cache may hold it, as it would after a restart)."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.models import RunRecord, RunStatus
from app.store import RunStore
from app.store.startup import open_store


def _fill(db: Path, n: int) -> None:
    store = RunStore(db)
    now = time.time()
    batch = 5_000
    for start in range(0, n, batch):
        store.insert_runs(
            [
                RunRecord(
                    seq=0,
                    name=f"2026-12-03_10-00-00_fno_64x128_{i:06d}",
                    status=RunStatus.QUEUED,
                    config_name="neuraloperator",
                    overrides=["model=fno", "data=64x128", f"seed={i}", "training.lr=0.001"],
                    run_dir=f"2026-12-03/2026-12-03_10-00-00_fno_64x128_{i:06d}",
                    gpu_need=1,
                    created_at=now,
                    owner="alice",
                    resources={"data_bytes": 1 << 20, "param_count": 10**6},
                )
                for i in range(start, min(n, start + batch))
            ]
        )
    store.close()


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10,000 runs instead of 100,000")
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory(prefix="labrun-store-bench-") as tmp:
        db = Path(tmp) / "runs.db"
        _fill(db, n)
        checks, opens = [], []
        for _ in range(5):
            began = time.perf_counter()
            store, took = open_store(db, Path(tmp) / "runs")
            opens.append(time.perf_counter() - began)
            checks.append(took)
            store.close()
        size = db.stat().st_size
    fig = {
        "store_runs": n,
        "store_bytes": size,
        "store_check_p50_s": statistics.median(checks),
        "store_open_p50_s": statistics.median(opens),
    }
    check_ms, open_ms = fig["store_check_p50_s"] * 1000, fig["store_open_p50_s"] * 1000
    print(
        f"store start-up check, {n:,} runs ({size >> 20} MiB): quick_check p50 {check_ms:.0f} ms, open {open_ms:.0f} ms"
    )
    return fig


if __name__ == "__main__":
    main(sys.argv[1:])
