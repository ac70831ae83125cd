"""Service benchmarks (issue 5): submission, polling, dispatch, memory — against a real `python -m app`.

Runs are a stand-in shell script (bench/standin_trainer.sh) so that the figures are the service's own.
Every submission carries a distinct override list, so nothing can be answered from a cache of responses.

    python bench/service_bench.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    ROOT,
    STANDIN,
    ensure_wrk,
    ms,
    pct,
    rss_mb,
    run_wrk,
    service,
    wait_for,
)

BASE = ["model=fno", "data=32x64"]


def timed_posts(
    client: httpx.Client,
    path: str,
    bodies: list[dict[str, Any]],
    check: Callable[[httpx.Response], bool] = lambda _r: True,
) -> list[float]:
    """Seconds each POST of ``bodies`` took, one after the other (each must answer 201 and pass ``check``)."""
    took = []
    for body in bodies:
        t = time.perf_counter()
        r = client.post(path, json=body)
        took.append(time.perf_counter() - t)
        assert r.status_code == 201, r.text
        assert check(r), r.text
    return took


def overrides(i: int) -> list[str]:
    return [*BASE, f"training.lr={0.001 + i * 1e-7:.7f}", f"seed={i}"]


POST_LUA = """
local id = 0
local counter = 0
function setup(thread) id = id + 1; thread:set("tid", id) end
function init(args) tid = tid or 0 end
function request()
  counter = counter + 1
  local body = string.format(
    '{"overrides": ["model=fno", "data=32x64", "training.lr=0.%d%07d", "seed=%d"]}', tid, counter, counter)
  return wrk.format("POST", "/runs", {["Content-Type"] = "application/json"}, body)
end
"""


def bench_validators(n: int) -> dict:
    """In-process: a fresh Hydra compose per request (the naive validator) vs the cached compose."""
    from trainer import config
    from trainer.config_cache import ConfigCache

    def validate(compose, i):
        ov = overrides(100_000 + i)
        cfg = compose(ov)
        config.assign_run_name(cfg, ov)
        config.job_config(cfg)

    naive, cached = [], []
    cache = ConfigCache()
    validate(cache.compose, -1)  # the one real compose per group-choice list
    for i in range(n):
        t = time.perf_counter()
        validate(config.compose_config, i)
        naive.append(time.perf_counter() - t)
        t = time.perf_counter()
        validate(cache.compose, i)
        cached.append(time.perf_counter() - t)
    return {"naive_compose_p50_s": pct(naive, 50), "cached_compose_p50_s": pct(cached, 50)}


def bench_cli_baseline(n: int) -> float:
    """`python -m trainer --cfg job <overrides>` in a fresh process: what a user does without the service."""
    times = []
    for i in range(n):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "trainer", "--cfg", "job", *overrides(200_000 + i)],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_submission(n: int, seconds: int, wrk: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times"
        # One slot and a first run that holds it: the runs submitted here queue up behind it, so the
        # figures are the submission path's (validate, name, store), not process start-ups competing for
        # the same two cores. Dispatch is measured on its own below.
        with service(["sh", str(STANDIN), str(times), "600"], LABRUN_MAX_CPU_RUNS="1") as svc:
            with httpx.Client(base_url=svc.url, timeout=30) as client:
                for i in range(5):
                    client.post("/runs", json={"overrides": overrides(900_000 + i)}).raise_for_status()
                lat = timed_posts(client, "/runs", [{"overrides": overrides(i)} for i in range(n)])
            result = {"post_1client_p50_s": pct(lat, 50), "post_1client_p99_s": pct(lat, 99)}
            if wrk:
                script = Path(tmp) / "post.lua"
                script.write_text(POST_LUA)
                w = run_wrk(svc.url + "/runs", 8, seconds, script)
                result |= {
                    "post_8clients_rps": w.requests_per_s,
                    "post_8clients_p99_ms": w.p99_ms,
                    "post_8clients_non2xx": w.non_2xx + w.errors,
                }
    return result


def sweep_lines(rep: int) -> list[str]:
    """2 models x 2 data x 64 values of a numeric key: a 256-run sweep, its values distinct per ``rep``."""
    lrs = ",".join(f"{0.001 + rep * 1e-4 + i * 1e-7:.7f}" for i in range(64))
    return ["model=fno,sfno", "data=32x64,64x128", f"training.lr={lrs}"]


def bench_sweep(reps: int) -> dict:
    """POST /sweeps of 256 runs (expand, validate each, queue all) vs the same 256 runs as single POSTs."""
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times"
        # One slot, held: the runs queue behind it (the submission path is measured, not process starts).
        env = {"LABRUN_MAX_CPU_RUNS": "1", "LABRUN_MAX_QUEUED_PER_USER": "0"}
        with (
            service(["sh", str(STANDIN), str(times), "600"], **env) as svc,
            httpx.Client(base_url=svc.url, timeout=120) as client,
        ):
            client.post("/runs", json={"overrides": overrides(800_000)}).raise_for_status()
            for group in ("model=fno,sfno", "data=32x64,64x128"):  # warm: as the single POSTs' first 5
                client.post("/sweeps", json={"overrides": [group, "seed=1"]}).raise_for_status()
            bodies = [{"overrides": sweep_lines(rep)} for rep in range(reps)]
            sweeps = timed_posts(client, "/sweeps", bodies, check=lambda r: r.json()["size"] == 256)
            t = time.perf_counter()
            for model in ("fno", "sfno"):
                for data in ("32x64", "64x128"):
                    for i in range(64):
                        lr = f"training.lr={0.001 + (reps + 1) * 1e-4 + i * 1e-7:.7f}"
                        body = {"overrides": [f"model={model}", f"data={data}", lr]}
                        r = client.post("/runs", json=body)
                        assert r.status_code == 201, r.text
            singles = time.perf_counter() - t
    return {"sweep_256_s": statistics.median(sweeps), "sweep_256_max_s": max(sweeps), "post_256_s": singles}


def bench_polling_and_memory(n_runs: int, seconds: int, wrk: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times"
        with service(["sh", str(STANDIN), str(times), "600"], LABRUN_MAX_CPU_RUNS="4") as svc:
            time.sleep(1.0)
            idle = rss_mb(svc.pid)
            names = []
            with httpx.Client(base_url=svc.url, timeout=30) as client:
                for i in range(n_runs):
                    r = client.post("/runs", json={"overrides": overrides(300_000 + i)})
                    assert r.status_code == 201, r.text
                    names.append(r.json()["name"])
                after = rss_mb(svc.pid)
                running = [
                    r["name"] for r in client.get("/runs", params={"status": "running"}).json()["data"]
                ]
                result = {
                    "rss_idle_mb": idle,
                    f"rss_after_{n_runs}_submissions_mb": after,
                    "runs_in_store": n_runs,
                    "running": len(running),
                }
                if wrk:
                    one = run_wrk(f"{svc.url}/runs/{running[0] if running else names[0]}", 32, seconds)
                    lst = run_wrk(f"{svc.url}/runs?limit=50", 32, seconds)
                    result |= {
                        "get_run_rps": one.requests_per_s,
                        "get_run_p99_ms": one.p99_ms,
                        "get_run_non2xx": one.non_2xx + one.errors,
                        "list_rps": lst.requests_per_s,
                        "list_p99_ms": lst.p99_ms,
                        "list_non2xx": lst.non_2xx + lst.errors,
                    }
                for name in running:
                    client.post(f"/runs/{name}/cancel")
    return result


LRS = ("1e-3", "1e-4", "3e-4", "0.01", "0.003")


def varied_overrides(i: int) -> list[str]:
    """A lab's mix: two models, five learning rates (spelled as people do), a seed each."""
    return [f"model={'fno' if i % 2 else 'sfno'}", f"training.lr={LRS[i % len(LRS)]}", f"seed={i}"]


def fill_store(output_dir: Path, n: int, varied: bool = False) -> float:
    """``n`` finished runs straight into a new store (years of a lab's runs), for the paging figures. With
    ``varied``, each its own overrides (``varied_overrides``), indexed as a store from before the override
    index would be at start-up: the seconds that backfill took are returned."""
    import sqlite3

    from app.statedir import StateDir
    from app.store import RunStore

    db = StateDir(output_dir).db
    RunStore(db).close()  # the current schema
    now = time.time() - n
    rows = [
        (
            f"run-{i:07d}",
            "succeeded",
            "neuraloperator",
            json.dumps(varied_overrides(i)) if varied else '["model=fno"]',
            f"2026-01-01/run-{i:07d}",
            0,
            now + i,
        )
        for i in range(n)
    ]
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO runs (name, status, config_name, overrides, run_dir, gpu_need, created_at)"
            " VALUES (?,?,?,?,?,?,?)",
            rows,
        )
        if varied:
            conn.execute("INSERT INTO run_overrides_backfill SELECT MAX(seq) + 1 FROM runs")
    if not varied:
        return 0.0
    began = time.perf_counter()
    RunStore(db).close()  # fills the index in, as the first start after the upgrade does
    return time.perf_counter() - began


def bench_list_filtered(n_runs: int, seconds: int, wrk: str | None) -> dict:
    """GET /runs?override=model=fno&override=training.lr=1e-4&limit=50 with ``n_runs`` runs in the store
    (a tenth of them match), and the start-up backfill of the override index for those runs."""
    if not wrk:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        backfill_s = fill_store(Path(tmp), n_runs, varied=True)
        with service(["true"], LABRUN_OUTPUT_DIR=tmp) as svc:
            query = "override=model%3Dfno&override=training.lr%3D0.0001&limit=50"
            answer = httpx.get(f"{svc.url}/runs?{query}").json()
            expected = sum(1 for i in range(n_runs) if i % 2 and LRS[i % len(LRS)] == "1e-4")
            assert answer["count"] == expected, (answer["count"], expected)
            assert len(answer["data"]) == 50
            found = run_wrk(f"{svc.url}/runs?{query}", 32, seconds)
            return {
                "list_filtered_runs": n_runs,
                "list_filtered_matches": expected,
                "list_filtered_p99_ms": found.p99_ms,
                "list_filtered_rps": found.requests_per_s,
                "list_filtered_non2xx": found.non_2xx + found.errors,
                "override_backfill_s": backfill_s,
            }


def bench_list_many(n_runs: int, seconds: int, wrk: str | None) -> dict:
    """GET /runs?limit=50 (first page and a deep page by cursor) with ``n_runs`` runs in the store."""
    if not wrk:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        fill_store(Path(tmp), n_runs)
        with service(["true"], LABRUN_OUTPUT_DIR=tmp) as svc:
            deep = httpx.get(f"{svc.url}/runs", params={"limit": 50, "before": n_runs // 2}).json()
            assert len(deep["data"]) == 50, deep["count"]
            assert deep["count"] == n_runs, deep["count"]
            first = run_wrk(f"{svc.url}/runs?limit=50", 32, seconds)
            paged = run_wrk(f"{svc.url}/runs?limit=50&before={n_runs // 2}", 32, seconds)
            return {
                "list_many_runs": n_runs,
                "list_many_p99_ms": first.p99_ms,
                "list_many_rps": first.requests_per_s,
                "list_many_deep_p99_ms": paged.p99_ms,
                "list_many_non2xx": first.non_2xx + first.errors + paged.non_2xx + paged.errors,
            }


def bench_polling_while_big_logs_are_read(seconds: int, wrk: str | None, log_mb: int = 50) -> dict:
    """GET /runs/{name} (32 connections) while 4 clients keep reading a 50 MB log in full: log reads run off
    the event loop, so polling keeps its latency."""
    if not wrk:
        return {}
    import threading

    from app.statedir import StateDir

    with tempfile.TemporaryDirectory() as tmp, service(["true"], LABRUN_OUTPUT_DIR=tmp) as svc:
        name = httpx.post(f"{svc.url}/runs", json={"overrides": BASE}).json()["name"]
        log = StateDir(Path(tmp)).log(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        line = b"x" * 99 + b"\n"
        with open(log, "wb") as f:
            f.write(line * (log_mb * 10_000))
        stop = threading.Event()
        reads = [0]

        def reader() -> None:
            with httpx.Client(base_url=svc.url, timeout=60) as client:
                while not stop.is_set():
                    client.get(f"/runs/{name}/logs")  # the whole answer: the last 4 MiB
                    reads[0] += 1

        threads = [threading.Thread(target=reader, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            w = run_wrk(f"{svc.url}/runs/{name}", 32, seconds)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
    return {
        "get_run_during_log_reads_p99_ms": w.p99_ms,
        "get_run_during_log_reads_rps": w.requests_per_s,
        "log_reads_4mib": reads[0],
    }


def bench_auth_overhead(seconds: int, wrk: str | None) -> dict:
    """GET /runs/{name} latency at one connection, with auth on (a user, a token) and off, in one run."""
    if not wrk:
        return {}
    from app.statedir import StateDir
    from app.store import RunStore
    from app.users import Users

    result = {}
    for mode in ("off", "on"):
        with tempfile.TemporaryDirectory() as tmp:
            headers = {}
            if mode == "on":
                store = RunStore(StateDir(Path(tmp)).db)
                headers = {"Authorization": f"Bearer {Users(store).add('bench')}"}
                store.close()
            with service(["true"], LABRUN_OUTPUT_DIR=tmp) as svc:
                name = httpx.post(f"{svc.url}/runs", json={"overrides": BASE}, headers=headers).json()["name"]
                run_wrk(f"{svc.url}/runs/{name}", 1, 1, threads=1, headers=headers)  # warm-up
                w = run_wrk(f"{svc.url}/runs/{name}", 1, seconds, threads=1, headers=headers)
                assert w.non_2xx + w.errors == 0, (mode, w)
                result[f"get_run_auth_{mode}_p50_ms"] = w.p50_ms
    return result


def bench_dispatch(n_runs: int, run_seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times"
        command = ["sh", str(STANDIN), str(times), str(run_seconds)]
        with (
            service(command, LABRUN_MAX_CPU_RUNS="1") as svc,
            httpx.Client(base_url=svc.url, timeout=30) as client,
        ):
            names = [
                client.post("/runs", json={"overrides": overrides(400_000 + i)}).json()["name"]
                for i in range(n_runs)
            ]

            def all_done() -> bool:
                data = client.get("/runs", params={"limit": n_runs}).json()["data"]
                return all(r["status"] in ("succeeded", "failed", "cancelled") for r in data)

            assert wait_for(all_done, timeout=n_runs * (run_seconds + 5) + 30)
        events = sorted(
            (float(ts), kind, name)
            for kind, name, ts in (line.split() for line in times.read_text().splitlines())
        )
    starts = {name: ts for ts, kind, name in events if kind == "start"}
    ends = {name: ts for ts, kind, name in events if kind == "end"}
    order = [name for name in names if name in starts]
    gaps = [starts[b] - ends[a] for a, b in zip(order, order[1:], strict=False) if a in ends]
    return {
        "dispatch_runs": len(order),
        "dispatch_p50_s": statistics.median(gaps),
        "dispatch_max_s": max(gaps),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests, shorter wrk runs")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    quick = args.quick
    wrk = ensure_wrk()
    if not wrk:
        print("wrk not found and cannot be installed: throughput figures are skipped", file=sys.stderr)
    seconds = 4 if quick else 10
    fig: dict = {}

    fig |= bench_validators(10 if quick else 30)
    fig["cli_cfg_job_s"] = bench_cli_baseline(2 if quick else 5)
    fig |= bench_submission(50 if quick else 200, seconds, wrk)
    fig |= bench_sweep(2 if quick else 3)
    fig |= bench_polling_and_memory(200 if quick else 1000, seconds, wrk)
    fig |= bench_list_many(20_000 if quick else 100_000, seconds, wrk)
    fig |= bench_list_filtered(20_000 if quick else 100_000, seconds, wrk)
    fig |= bench_auth_overhead(seconds, wrk)
    fig |= bench_polling_while_big_logs_are_read(seconds, wrk)
    fig |= bench_dispatch(10 if quick else 12, 0.3)

    _print_submission(fig)
    _print_polling(fig)
    _print_dispatch_and_memory(fig)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))
    return fig


def _print_submission(fig: dict) -> None:
    p50 = fig["post_1client_p50_s"]
    print("\n== Submission (POST /runs, distinct overrides each)")
    print(f"  1 client: p50 {ms(p50)}, p99 {ms(fig['post_1client_p99_s'])}  (target p50 <= 25 ms)")
    if "post_8clients_rps" in fig:
        print(
            f"  8 clients: {fig['post_8clients_rps']:.0f} submissions/s, p99 {fig['post_8clients_p99_ms']:.1f} ms, "
            f"non-2xx {fig['post_8clients_non2xx']}  (target >= 40/s)"
        )
    print(
        f"  validator alone: fresh Hydra compose {ms(fig['naive_compose_p50_s'])} vs cached "
        f"{ms(fig['cached_compose_p50_s'])} = {fig['naive_compose_p50_s'] / fig['cached_compose_p50_s']:.1f}x"
    )
    print(
        f"  whole POST vs a fresh compose per request: {fig['naive_compose_p50_s'] / p50:.1f}x faster "
        f"(target >= 5x: a fresh compose alone is {ms(fig['naive_compose_p50_s'])})"
    )
    print(
        f"  vs `python -m trainer --cfg job` in a fresh process: {fig['cli_cfg_job_s']:.2f} s = "
        f"{fig['cli_cfg_job_s'] / p50:.0f}x"
    )
    print("\n== Sweeps (2 models x 2 data x 64 values = 256 runs: expand, validate each, queue all)")
    print(
        f"  POST /sweeps: p50 {fig['sweep_256_s']:.2f} s, max {fig['sweep_256_max_s']:.2f} s  (target <= 2 s); "
        f"the same 256 runs as single POST /runs: {fig['post_256_s']:.2f} s"
    )


def _print_polling(fig: dict) -> None:
    print(
        f"\n== Polling ({fig['runs_in_store']} runs in the store, {fig['running']} running, 32 connections)"
    )
    if "get_run_rps" in fig:
        print(
            f"  GET /runs/{{name}}: {fig['get_run_rps']:.0f} req/s, p99 {fig['get_run_p99_ms']:.1f} ms, "
            f"non-2xx {fig['get_run_non2xx']}  (target >= 1000 req/s, p99 <= 50 ms)"
        )
        print(
            f"  GET /runs?limit=50: {fig['list_rps']:.0f} req/s, p99 {fig['list_p99_ms']:.1f} ms, "
            f"non-2xx {fig['list_non2xx']}  (target p99 <= 100 ms)"
        )
    if "get_run_during_log_reads_p99_ms" in fig:
        print(
            f"  GET /runs/{{name}} while 4 clients read a 50 MB log ({fig['log_reads_4mib']} pages of 4 MiB): "
            f"{fig['get_run_during_log_reads_rps']:.0f} req/s, p99 {fig['get_run_during_log_reads_p99_ms']:.1f} ms"
            "  (target p99 <= 50 ms)"
        )
    if "get_run_auth_on_p50_ms" in fig:
        on, off = fig["get_run_auth_on_p50_ms"], fig["get_run_auth_off_p50_ms"]
        print(
            f"  GET /runs/{{name}} at 1 connection, p50: auth off {off:.2f} ms, auth on {on:.2f} ms "
            f"(+{on - off:.2f} ms; target <= 1 ms)"
        )
    if "list_many_p99_ms" in fig:
        print(
            f"  with {fig['list_many_runs']:,} runs in the store: GET /runs?limit=50 p99 "
            f"{fig['list_many_p99_ms']:.1f} ms ({fig['list_many_rps']:.0f} req/s), a deep page (before=) p99 "
            f"{fig['list_many_deep_p99_ms']:.1f} ms, non-2xx {fig['list_many_non2xx']}  (target p99 <= 100 ms)"
        )
    if "list_filtered_p99_ms" in fig:
        print(
            f"  with {fig['list_filtered_runs']:,} runs: GET /runs?override=model=fno&override=training.lr=1e-4 "
            f"({fig['list_filtered_matches']:,} match) p99 {fig['list_filtered_p99_ms']:.1f} ms "
            f"({fig['list_filtered_rps']:.0f} req/s), non-2xx {fig['list_filtered_non2xx']}  (target p99 <= 100 ms); "
            f"the index's start-up backfill of those runs: {fig['override_backfill_s']:.1f} s"
        )


def _print_dispatch_and_memory(fig: dict) -> None:
    print(f"\n== Dispatch ({fig['dispatch_runs']} runs of 0.3 s, one slot)")
    print(
        f"  process end -> next process start: p50 {ms(fig['dispatch_p50_s'])}, max {ms(fig['dispatch_max_s'])}"
        "  (target p50 <= 500 ms)"
    )
    key = [k for k in fig if k.startswith("rss_after")][0]
    print("\n== Memory (service RSS)")
    print(
        f"  idle {fig['rss_idle_mb']:.0f} MB, after {fig['runs_in_store']} submissions {fig[key]:.0f} MB"
        "  (targets <= 150 / 200 MB)"
    )


if __name__ == "__main__":
    main()
