"""The scale of a team (issue 22): 5,000 queued runs of 50 users under fair share, against the same 5,000
runs of one user. Two figures each: picking the next run (a dispatch round as ``Dispatcher.pick`` makes it:
read the queue and the running runs, order them fairly, take what fits one free slot) and a submission
through a real service (auth on, the user's own token), with those runs queued behind one that holds the
only slot.

    python bench/scale_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ms, pct, service

QUEUED = 5_000
HOLD_SEED = 777_777
TRAINER = ["sh", "-c", f'for a; do [ "$a" = seed={HOLD_SEED} ] && exec sleep 600; done; exec sleep 1', "sh"]


def fill(output_dir: Path, users: int, queued: int) -> dict[str, str]:
    """A store with ``users`` users (u0 an admin) and ``queued`` queued CPU runs spread over them, oldest
    first, each holding the slot once started (the stand-in sleeps for its seed); every user's token."""
    from app.statedir import StateDir
    from app.store import RunStore
    from app.users import Users

    db = StateDir(output_dir).db
    store = RunStore(db)
    try:
        tokens = {f"u{i}": Users(store).add(f"u{i}", admin=i == 0) for i in range(users)}
    finally:
        store.close()
    now = time.time() - queued
    rows = [
        (
            f"q-{i:06d}",
            "queued",
            "neuraloperator",
            f'["seed={HOLD_SEED}"]',
            f"2026-01-01/q-{i:06d}",
            0,
            now + i,
            f"u{i % users}",
        )
        for i in range(queued)
    ]
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO runs (name, status, config_name, overrides, run_dir, gpu_need, created_at, owner)"
            " VALUES (?,?,?,?,?,?,?,?)",
            rows,
        )
    return tokens


def pick_seconds(output_dir: Path, rounds: int) -> list[float]:
    """A dispatch round, as ``Dispatcher.pick`` makes it, with one free CPU slot (nothing is started)."""
    from app.fairshare import FairShare
    from app.lifecycle.picking import FairSharePicking, Round
    from app.models import RunStatus
    from app.scheduling import Slots
    from app.statedir import StateDir
    from app.store import RunStore

    store = RunStore(StateDir(output_dir).db)
    policy, slots = FairSharePicking(FairShare(3600.0)), Slots([], 1)
    took = []
    try:
        for _ in range(rounds):
            t = time.perf_counter()
            queued, running = store.entries(RunStatus.QUEUED), store.entries(RunStatus.RUNNING)
            picks = policy.pick(Round(queued, running, slots.copy(), frozenset(), lambda _o: None, 0))
            took.append(time.perf_counter() - t)
            assert len(picks.start) == 1
    finally:
        store.close()
    return took


def submit_seconds(output_dir: Path, token: str, n: int) -> list[float]:
    env = {"LABRUN_OUTPUT_DIR": str(output_dir), "LABRUN_AUTH": "on", "LABRUN_MAX_CPU_RUNS": "1"}
    took = []
    with (
        service(TRAINER, **env) as svc,
        httpx.Client(base_url=svc.url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as c,
    ):
        for i in range(n + 5):  # the first 5 warm the compose cache and the connection
            body = {"overrides": ["model=fno", "data=32x64", f"training.lr={0.002 + i * 1e-7:.7f}"]}
            t = time.perf_counter()
            r = c.post("/runs", json=body)
            if i >= 5:
                took.append(time.perf_counter() - t)
            assert r.status_code == 201, r.text
    return took


def measure(quick: bool = False) -> dict[str, Any]:
    fig: dict[str, Any] = {"scale_queued": QUEUED}
    rounds, n = (10, 20) if quick else (20, 40)
    for users in (1, 50):
        with tempfile.TemporaryDirectory(prefix="labrun-scale-") as tmp:
            tokens = fill(Path(tmp), users, QUEUED)
            pick_seconds(Path(tmp), 2)  # warm
            picks = pick_seconds(Path(tmp), rounds)
            submits = submit_seconds(Path(tmp), tokens[f"u{users - 1}"], n)
        fig |= {
            f"scale_{users}u_pick_p50_s": pct(picks, 50),
            f"scale_{users}u_submit_p50_s": pct(submits, 50),
            f"scale_{users}u_submit_p99_s": pct(submits, 99),
        }
    return fig


def print_figures(fig: dict[str, Any]) -> None:
    if "scale_1u_pick_p50_s" not in fig:
        return
    print(f"\n== Scale of a team ({fig['scale_queued']:,} queued runs, fair share)")
    for what, key in (("picking the next run, p50", "pick_p50"), ("a submission, p50", "submit_p50")):
        one, fifty = fig[f"scale_1u_{key}_s"], fig[f"scale_50u_{key}_s"]
        print(f"  {what:<28} 1 user {ms(one):>9}, 50 users {ms(fifty):>9} = {fifty / one:.1f}x (goal <= 2x)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    fig = measure(ap.parse_args(argv).quick)
    print_figures(fig)
    return fig


if __name__ == "__main__":
    main()
