"""`make bench`: every benchmark, one after the other, and the figures written to bench/RESULTS.md."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import platform
import sys
from contextlib import redirect_stdout
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


def main(argv: list[str]) -> None:
    from bench import (
        archive_bench,
        cli_bench,
        curve_bench,
        estimate_bench,
        hot_paths_bench,
        notify_bench,
        preempt_bench,
        service_bench,
        store_bench,
        trainer_throughput,
    )

    quick = "--quick" in argv
    captured = io.StringIO()
    with redirect_stdout(_Tee(sys.stdout, captured)):
        service = service_bench.main(["--quick"] if quick else [])
        print()
        trainer = trainer_throughput.main(["--quick"] if quick else [])
        print()
        cli = cli_bench.main(["--quick"] if quick else [])
        print()
        curves = curve_bench.main(["--quick"] if quick else [])
        print()
        store = store_bench.main(["--quick"] if quick else [])
        print()
        notify = notify_bench.main(["--quick"] if quick else [])
        preemption = preempt_bench.main(["--quick"] if quick else [])
        print()
        estimates = estimate_bench.main(["--quick"] if quick else [])
        print()
        # labrun, then Ray Jobs (its own venv, bench/.ray-venv), then a bare server: one at a time
        hot = hot_paths_bench.main(["--quick"] if quick else [])
        print()
        files = archive_bench.main(["--quick"] if quick else [])
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    text = (
        "# Benchmark results\n\n"
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine} by `make bench`"
        f"{' (--quick)' if quick else ''}.\n\n```text\n{captured.getvalue().strip()}\n```\n\n"
        "Raw figures:\n\n```json\n"
        + json.dumps(
            {
                "service": service,
                "trainer": trainer,
                "cli": cli,
                "curves": curves,
                "store": store,
                "notify": notify,
                "preemption": preemption,
                "estimates": estimates,
                "hot_paths": hot,
                "run_files": files,
            },
            indent=2,
            default=str,
        )
        + "\n```\n"
    )
    (HERE / "RESULTS.md").write_text(text)
    print(f"\nwritten to {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
