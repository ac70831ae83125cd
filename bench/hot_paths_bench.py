"""The hot paths (issue 22), side by side with Ray Jobs and with a bare FastAPI + uvicorn server.

One system at a time, in one sitting, with the same client and probes:

- labrun with auth on (one admin's token), 64 CPU slots, a stand-in trainer (``sleep 1``), so that every
  submission's run starts at once: 40 sequential submissions with distinct overrides (and the same 40
  while nothing starts: one slot, held); submit -> running; ``wrk -t2 -c32`` on one running run's
  ``GET /runs/{name}``, on ``GET /runs?limit=50`` and on ``GET /queue``; the idle memory of the service.
- a bare FastAPI + uvicorn app answering each of those bodies, byte for byte, with no work (the ceiling):
  labrun's polling as a share of it.
- Ray Jobs (a local head, jobs ``sleep 1``; ``bench/ray_peer.py``), when it can be installed and started.
- the scale of a team: picking the next run and a submission with 5,000 queued runs of 50 users, against
  the same 5,000 of one user.

    python bench/hot_paths_bench.py [--quick] [--no-ray] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ensure_wrk, free_port, ms, pct, rss_mb, run_wrk, service, wait_for

BASE = ["model=fno", "data=32x64"]
HOLD_SEED = 777_777  # the stand-in trainer sleeps 600 s for this seed (a run that stays running), else 1 s
TRAINER = ["sh", "-c", f'for a; do [ "$a" = seed={HOLD_SEED} ] && exec sleep 600; done; exec sleep 1', "sh"]
CPU_SLOTS = "64"


def overrides(i: int) -> list[str]:
    return [*BASE, f"training.lr={0.001 + i * 1e-7:.7f}", f"seed={i}"]


def admin_token(output_dir: Path) -> str:
    """A store with one admin user in ``output_dir`` (auth on from the start); their token."""
    from app.statedir import StateDir
    from app.store import RunStore
    from app.users import Users

    store = RunStore(StateDir(output_dir).db)
    try:
        return Users(store).add("admin", admin=True)
    finally:
        store.close()


@contextlib.contextmanager
def labrun(slots: str = CPU_SLOTS, **env: str) -> Iterator[tuple[Any, httpx.Client]]:
    with tempfile.TemporaryDirectory(prefix="labrun-hot-", ignore_cleanup_errors=True) as tmp:
        token = admin_token(Path(tmp))
        with (
            service(
                TRAINER, LABRUN_OUTPUT_DIR=tmp, LABRUN_AUTH="on", LABRUN_MAX_CPU_RUNS=slots, **env
            ) as svc,
            httpx.Client(
                base_url=svc.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
            ) as client,
        ):
            yield svc, client


def submit_many(client: httpx.Client, first: int, n: int) -> tuple[list[float], list[str]]:
    took, names = [], []
    for i in range(first, first + n):
        t = time.perf_counter()
        r = client.post("/runs", json={"overrides": overrides(i)})
        took.append(time.perf_counter() - t)
        assert r.status_code == 201, r.text
        names.append(r.json()["name"])
    return took, names


def until_running(client: httpx.Client, name: str, timeout: float = 30) -> float:
    """Seconds from now until a poll (every 2 ms) sees ``name`` running (or already ended)."""
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        if client.get(f"/runs/{name}").json()["status"] not in ("queued",):
            return time.perf_counter() - t
        time.sleep(0.002)
    raise AssertionError(f"{name} did not start within {timeout} s")


def labrun_submissions(n: int) -> dict[str, Any]:
    """Submission while nothing starts (one slot, held) and while each run starts (64 slots)."""
    fig: dict[str, Any] = {}
    with labrun(slots="1") as (_svc, client):
        client.post("/runs", json={"overrides": overrides(HOLD_SEED)}).raise_for_status()  # holds the slot
        submit_many(client, 10_000, 5)  # warm: the compose cache, the connection
        queued, _ = submit_many(client, 20_000, n)
    fig |= {"submit_queued_p50_s": pct(queued, 50), "submit_queued_p99_s": pct(queued, 99)}
    with labrun() as (svc, client):
        time.sleep(1.0)
        fig["rss_idle_mb"] = rss_mb(svc.pid)
        submit_many(client, 10_000, 5)
        wait_for(lambda: not client.get("/runs", params={"status": "queued,running"}).json()["data"], 30)
        starting, _ = submit_many(client, 30_000, n)
        fig |= {"submit_starting_p50_s": pct(starting, 50), "submit_starting_p99_s": pct(starting, 99)}
        to_running = []
        for i in range(10):
            t = time.perf_counter()
            r = client.post("/runs", json={"overrides": overrides(40_000 + i)})
            to_running.append(time.perf_counter() - t + until_running(client, r.json()["name"]))
        fig["submit_to_running_p50_s"] = pct(to_running, 50)
    return fig


def polled_paths(running: str) -> dict[str, str]:
    return {"run": f"/runs/{running}", "list": "/runs?limit=50", "queue": "/queue"}


def labrun_polling(seconds: int) -> tuple[dict[str, Any], dict[str, bytes], str]:
    """wrk on each polled path of a service with 60 runs in its store, one of them running; returns the
    figures, each path's body (for the bare server) and the token's header."""
    fig: dict[str, Any] = {}
    with labrun() as (svc, client):
        submit_many(client, 50_000, 59)
        held = client.post("/runs", json={"overrides": overrides(HOLD_SEED)}).json()["name"]
        until_running(client, held)
        wait_for(lambda: len(client.get("/runs", params={"status": "running"}).json()["data"]) == 1, 30)
        paths = polled_paths(held)
        bodies = {key: client.get(path).content for key, path in paths.items()}
        auth = client.headers["Authorization"]
        for key, path in paths.items():
            run_wrk(svc.url + path, 32, 1, headers={"Authorization": auth})  # warm
            w = run_wrk(svc.url + path, 32, seconds, headers={"Authorization": auth})
            assert w.non_2xx + w.errors == 0, (path, w)
            fig |= {
                f"{key}_rps": w.requests_per_s,
                f"{key}_p99_ms": w.p99_ms,
                f"{key}_bytes": len(bodies[key]),
            }
        return fig, {paths[k]: v for k, v in bodies.items()}, auth


def bare_polling(bodies: dict[str, bytes], auth: str, seconds: int) -> dict[str, Any]:
    """The same paths and bytes from a bare FastAPI + uvicorn app (bench/bare_server.py)."""
    from bench.bare_server import route_file

    fig: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="labrun-bare-") as tmp:
        for path, body in bodies.items():
            (Path(tmp) / route_file(path.split("?")[0])).write_bytes(body)
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("bare_server.py")), str(port), tmp]
        )
        url = f"http://127.0.0.1:{port}"
        try:
            assert wait_for(lambda: _answers(url + "/healthz"), 30), "the bare server did not start"
            for key, path in zip(("run", "list", "queue"), bodies, strict=True):
                assert httpx.get(url + path).content == bodies[path]
                run_wrk(url + path, 32, 1, headers={"Authorization": auth})
                w = run_wrk(url + path, 32, seconds, headers={"Authorization": auth})
                fig |= {f"bare_{key}_rps": w.requests_per_s, f"bare_{key}_p99_ms": w.p99_ms}
        finally:
            proc.terminate()
            proc.wait(10)
    return fig


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


def ray_probes(n: int, seconds: int) -> dict[str, Any]:
    """The same probes on Ray Jobs; {"ray_unavailable": why} when it cannot be installed or started."""
    from bench.ray_peer import RayUnavailable, ray_head, ray_processes_rss_mb

    fig: dict[str, Any] = {}
    try:
        with (
            ray_head(num_cpus=int(CPU_SLOTS), dashboard_port=free_port()) as head,
            httpx.Client(timeout=60) as c,
        ):
            time.sleep(2.0)
            fig["ray_rss_idle_mb"], fig["ray_processes"] = ray_processes_rss_mb()
            for _ in range(3):
                head.submit(c, "sleep 1")  # warm
            took, jobs = [], []
            for _ in range(n):
                t = time.perf_counter()
                jobs.append(head.submit(c, "sleep 1"))
                took.append(time.perf_counter() - t)
            fig |= {"ray_submit_starting_p50_s": pct(took, 50), "ray_submit_starting_p99_s": pct(took, 99)}
            to_running = []
            for _ in range(5):
                t = time.perf_counter()
                job = head.submit(c, "sleep 1")
                while head.status(c, job) == "PENDING" and time.perf_counter() - t < 60:
                    time.sleep(0.002)
                to_running.append(time.perf_counter() - t)
            fig["ray_submit_to_running_p50_s"] = pct(to_running, 50)
            held = head.submit(c, "sleep 600")
            wait_for(lambda: head.status(c, held) == "RUNNING", 60)
            url = f"{head.url}/api/jobs/{held}"
            run_wrk(url, 32, 1)
            w = run_wrk(url, 32, seconds)
            fig |= {"ray_run_rps": w.requests_per_s, "ray_run_p99_ms": w.p99_ms, "ray_run_non2xx": w.non_2xx}
            with contextlib.suppress(httpx.HTTPError):
                c.post(f"{url}/stop")
    except RayUnavailable as exc:
        return {"ray_unavailable": str(exc)}
    except Exception as exc:  # a peer that misbehaves must not fail make bench
        return {"ray_unavailable": f"Ray failed during the probes: {type(exc).__name__}: {exc}"}
    return fig


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-ray", action="store_true", help="leave the Ray peer out")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    n, seconds = (20, 3) if args.quick else (40, 8)
    if not ensure_wrk():
        print("\n== Hot paths: skipped (no wrk, and it could not be installed)")
        return {}
    from bench import scale_bench

    fig = labrun_submissions(n)
    polling, bodies, auth = labrun_polling(seconds)
    fig |= polling
    fig |= bare_polling(bodies, auth, seconds)
    fig |= {"ray_unavailable": "left out (--no-ray)"} if args.no_ray else ray_probes(n, seconds)
    fig |= scale_bench.measure(quick=args.quick)
    print_figures(fig, n)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))
    return fig


def print_figures(fig: dict[str, Any], n: int) -> None:
    ray = "ray_unavailable" not in fig
    print(f"\n== Hot paths (auth on, {CPU_SLOTS} CPU slots, stand-in trainer; one system at a time)")
    if not ray:
        print(f"  Ray Jobs: not measured: {fig['ray_unavailable']}")

    def row(label: str, ours: str, peer: str = "-", bare: str = "-") -> None:
        print(f"  {label:<44} {ours:>22} {peer:>22} {bare:>22}")

    row("figure", "labrun", "Ray Jobs", "bare FastAPI+uvicorn")
    row(f"submit p50/p99, nothing starting ({n})", _pair(fig, "submit_queued"))
    row(
        f"submit p50/p99 while the runs start ({n})",
        _pair(fig, "submit_starting"),
        _pair(fig, "ray_submit_starting") if ray else "-",
    )
    row(
        "submit -> running p50",
        ms(fig["submit_to_running_p50_s"]),
        ms(fig["ray_submit_to_running_p50_s"]) if ray else "-",
    )
    for key, label in (("run", "GET /runs/{name}"), ("list", "GET /runs?limit=50"), ("queue", "GET /queue")):
        peer = (
            f"{fig['ray_run_rps']:.0f} rps, p99 {fig['ray_run_p99_ms']:.1f} ms"
            if ray and key == "run"
            else "-"
        )
        row(
            f"{label}, 32 conns ({fig[f'{key}_bytes']} B)",
            f"{fig[f'{key}_rps']:.0f} rps, p99 {fig[f'{key}_p99_ms']:.1f} ms",
            peer,
            f"{fig[f'bare_{key}_rps']:.0f} rps, p99 {fig[f'bare_{key}_p99_ms']:.1f} ms",
        )
    row(
        "idle memory, every process",
        f"{fig['rss_idle_mb']:.0f} MB (1)",
        f"{fig['ray_rss_idle_mb']:.0f} MB ({fig['ray_processes']})" if ray else "-",
    )
    print("  ratios:")
    print(
        f"    polling vs bare: GET /runs/{{name}} {fig['run_rps'] / fig['bare_run_rps']:.0%} (goal >= 70%), "
        f"GET /runs?limit=50 {fig['list_rps'] / fig['bare_list_rps']:.0%}, "
        f"GET /queue {fig['queue_rps'] / fig['bare_queue_rps']:.0%} (goals >= 50%)"
    )
    print(
        f"    submit while starting: p50 {ms(fig['submit_starting_p50_s'])} (goal <= 10 ms), "
        f"p99 {ms(fig['submit_starting_p99_s'])} (goal <= 40 ms)"
    )
    if ray:
        print(
            f"    Ray / labrun: submit p50 {fig['ray_submit_starting_p50_s'] / fig['submit_starting_p50_s']:.1f}x, "
            f"submit -> running {fig['ray_submit_to_running_p50_s'] / fig['submit_to_running_p50_s']:.0f}x, "
            f"idle memory {fig['ray_rss_idle_mb'] / fig['rss_idle_mb']:.1f}x; labrun / Ray: polling "
            f"{fig['run_rps'] / fig['ray_run_rps']:.1f}x the requests per second"
        )
    from bench import scale_bench

    scale_bench.print_figures(fig)


def _pair(fig: dict[str, Any], key: str) -> str:
    return f"{ms(fig[f'{key}_p50_s'])} / {ms(fig[f'{key}_p99_s'])}"


if __name__ == "__main__":
    main()
