"""How fast the `labrun` command line starts: `labrun --help` (target: 0.3 s; it imports neither httpx, rich,
torch, Hydra nor the service), and `labrun ls` against a real service (the table of 50 runs: httpx and rich
load, one request), each a fresh process, as a user types them.

    python bench/cli_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ms, pct, service, wait_for

HELP_TARGET_S = 0.3


def _command() -> list[str]:
    """The installed console script, as a user runs it (``python -m labrun`` when it is not installed)."""
    script = Path(sys.executable).with_name("labrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "labrun"]


def _time(command: list[str], n: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, fewer runs in the store")
    args = ap.parse_args(argv)
    n = 5 if args.quick else 20
    n_runs = 60 if args.quick else 200
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABRUN_")}
    labrun = _command()

    bare = _time([sys.executable, "-c", "pass"], n, env)
    help_ = _time([*labrun, "--help"], n, env)
    fig = {
        "python_start_p50_s": pct(bare, 50),
        "cli_help_p50_s": pct(help_, 50),
        "cli_help_max_s": max(help_),
    }
    # Runs that end at once (`true`), all finished before the timing starts: no process competes with it,
    # and none outlives the benchmark.
    with service(["true"]) as svc:
        with httpx.Client(base_url=svc.url, timeout=30) as client:
            for i in range(n_runs):
                client.post("/runs", json={"overrides": [f"seed={i}"]}).raise_for_status()
            busy = {"status": "queued,running", "limit": 1}
            wait_for(lambda: client.get("/runs", params=busy).json()["count"] == 0, timeout=120, interval=0.2)
        env["LABRUN_URL"] = svc.url
        ls = _time([*labrun, "ls", "--limit", "50"], n, env)
        ls_json = _time([*labrun, "ls", "--limit", "50", "--json"], n, env)
    fig |= {
        "cli_ls_runs_in_store": n_runs,
        "cli_ls_p50_s": pct(ls, 50),
        "cli_ls_json_p50_s": pct(ls_json, 50),
    }

    print(f"== Command line (`{' '.join(Path(c).name for c in labrun)}`, a fresh process each, {n} times)")
    print(
        f"  --help: p50 {ms(fig['cli_help_p50_s'])}, max {ms(fig['cli_help_max_s'])}  "
        f"(target <= {HELP_TARGET_S * 1000:.0f} ms; a bare `python -c pass` is {ms(fig['python_start_p50_s'])})"
    )
    print(
        f"  ls --limit 50 ({n_runs} runs stored): table p50 {ms(fig['cli_ls_p50_s'])}, "
        f"--json p50 {ms(fig['cli_ls_json_p50_s'])}"
    )
    return fig


if __name__ == "__main__":
    main(sys.argv[1:])
