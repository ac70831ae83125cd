"""Curves of a huge metrics.csv (issue 20, item 9): GET /runs/{name}/metrics of a 20-million-row file
against a real `python -m app`, with the service's memory and other requests' latency meanwhile.

Before: 90 s for the first answer, 10 GB of memory (4.5 GB kept), /healthz waiting up to 17 s.
Goal: the first answer in a few seconds, the service below ~300 MB, other requests' p99 as without it.

The first answer is a curve sampled from the file ("partial": true) while the service's reader process
reads it whole; the bench polls as the dashboard does until the full answer, and reports both times, the
service's memory and its reader process's, and other requests' latency from the first request to the full
answer.

    python bench/curve_bench.py [--quick] [--rows N] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ms, pct, rss_mb, service

HEADER = b"epoch,step,train_loss,lr-AdamW,train_loss_epoch,val_loss\r\n"
STEPS_PER_EPOCH = 10_000


def write_metrics(path: Path, rows: int) -> None:
    """Lightning-like rows (two metrics a step, an epoch row every 10,000 steps, \\r\\n endings), written in
    blocks of 100,000 rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(HEADER)
        for start in range(0, rows, 100_000):
            lines = []
            for step in range(start, min(rows, start + 100_000)):
                epoch = step // STEPS_PER_EPOCH
                loss = 1.0 / (1.0 + step * 1e-5) + (step % 97) * 1.3e-4
                lines.append(f"{epoch},{step},{loss!r},{3e-4 * 0.99999**epoch!r},,\r\n")
                if step % STEPS_PER_EPOCH == STEPS_PER_EPOCH - 1:
                    lines.append(f"{epoch},{step},,,{loss!r},{loss * 1.1!r}\r\n")
            f.write("".join(lines).encode())


class Sampler:
    """GET each path in turn, one request at a time, until stopped: the latencies per path; and the
    service's RSS every 50 ms."""

    def __init__(self, url: str, pid: int, paths: list[str]) -> None:
        self.url, self.pid, self.paths = url, pid, paths
        self.latency: dict[str, list[float]] = {p: [] for p in paths}
        self.rss: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._get, daemon=True), threading.Thread(target=self._mem)]

    def __enter__(self) -> Sampler:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _get(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                for path in self.paths:
                    t = time.perf_counter()
                    client.get(path).raise_for_status()
                    self.latency[path].append(time.perf_counter() - t)
                time.sleep(0.01)

    def _mem(self) -> None:
        while not self._stop.is_set():
            self.rss.append(rss_mb(self.pid))
            time.sleep(0.05)


def poll_full(client: httpx.Client, path: str, pid: int) -> tuple[httpx.Response, list[float]]:
    """GET ``path`` every 0.5 s (as the dashboard polls) until the answer is not partial; meanwhile the RSS
    of the service's reader process (its child running app.curves.worker)."""
    import psutil

    reader_rss: list[float] = []
    while True:
        response = client.get(path)
        response.raise_for_status()
        if not response.json().get("partial"):
            return response, reader_rss
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                if "app.curves.worker" in child.cmdline():
                    reader_rss.append(child.memory_info().rss / 2**20)
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 million rows instead of 20 million")
    ap.add_argument("--rows", type=int, help="rows of the big metrics.csv")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    rows = args.rows or (2_000_000 if args.quick else 20_000_000)
    fig: dict = {"rows": rows}
    with service(["true"]) as svc, httpx.Client(base_url=svc.url, timeout=600) as client:
        big, other = (client.post("/runs", json={"overrides": [f"seed={i}"]}).json() for i in (1, 2))
        t = time.perf_counter()
        write_metrics(svc.output_dir / big["run_dir"] / "metrics.csv", rows)
        write_metrics(svc.output_dir / other["run_dir"] / "metrics.csv", 5_000)
        fig["file_mb"] = (svc.output_dir / big["run_dir"] / "metrics.csv").stat().st_size / 2**20
        fig["write_s"] = time.perf_counter() - t
        paths = ["/healthz", f"/runs/{other['name']}", f"/runs/{other['name']}/metrics"]
        client.get(paths[2]).raise_for_status()  # the small file's curves are cached, as a dashboard's
        fig["rss_before_mb"] = rss_mb(svc.pid)
        with Sampler(svc.url, svc.pid, paths) as idle:
            time.sleep(5)
        with Sampler(svc.url, svc.pid, paths) as busy:
            t = time.perf_counter()
            first = client.get(f"/runs/{big['name']}/metrics")
            fig["first_s"] = time.perf_counter() - t
            first.raise_for_status()
            full, reader_rss = poll_full(client, f"/runs/{big['name']}/metrics", svc.pid)
            fig["full_s"] = time.perf_counter() - t
        fig["first_partial"] = bool(first.json().get("partial"))
        fig["first_points"] = {k: len(v["value"]) for k, v in first.json()["metrics"].items()}
        fig["rss_max_mb"] = max(busy.rss)
        fig["reader_rss_max_mb"] = max(reader_rss, default=0.0)
        fig["rss_after_mb"] = rss_mb(svc.pid)
        for path, key in zip(paths, ("healthz", "get_other_run", "other_run_curves"), strict=True):
            fig[f"{key}_idle_p99_ms"] = pct(idle.latency[path], 99) * 1000
            fig[f"{key}_during_p99_ms"] = pct(busy.latency[path], 99) * 1000
            fig[f"{key}_during_max_ms"] = max(busy.latency[path]) * 1000
        fig["points"] = {k: len(v["value"]) for k, v in full.json()["metrics"].items()}
        assert full.json()["rows"] == rows + rows // STEPS_PER_EPOCH, full.json()["rows"]
        t = time.perf_counter()
        client.get(f"/runs/{big['name']}/metrics").raise_for_status()
        fig["cached_s"] = time.perf_counter() - t
        with open(svc.output_dir / big["run_dir"] / "metrics.csv", "ab") as f:  # the run goes on
            f.write(b"".join(b"99,%d,0.5,0.0001,,\r\n" % (rows + i) for i in range(10_000)))
        t = time.perf_counter()
        grown = client.get(f"/runs/{big['name']}/metrics").json()
        fig["grown_10k_rows_s"] = time.perf_counter() - t
        assert grown["rows"] == full.json()["rows"] + 10_000, grown["rows"]
    report(fig)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))
    return fig


def report(fig: dict) -> None:
    print(
        f"\n== Curves of a {fig['file_mb']:.0f} MB metrics.csv ({fig['rows']:,} rows; written in {fig['write_s']:.1f} s)"
    )
    kind = "a partial curve, sampled" if fig["first_partial"] else "the full curves"
    print(f"  first GET /runs/{{name}}/metrics: {fig['first_s']:.2f} s, {kind}  (target: a few seconds)")
    print(f"  the full curves, polling every 0.5 s: {fig['full_s']:.1f} s after the first request")
    print(f"  again (cached): {ms(fig['cached_s'])}; after 10,000 more rows: {ms(fig['grown_10k_rows_s'])}")
    print(f"  points sent per curve: {fig['points']}")
    print(
        f"  service RSS: {fig['rss_before_mb']:.0f} MB before, {fig['rss_max_mb']:.0f} MB at most while read, "
        f"{fig['rss_after_mb']:.0f} MB after  (target <= 300 MB); its reader process: "
        f"{fig['reader_rss_max_mb']:.0f} MB at most"
    )
    for key, label in (
        ("healthz", "GET /healthz"),
        ("get_other_run", "GET /runs/{other}"),
        ("other_run_curves", "GET /runs/{other}/metrics"),
    ):
        print(
            f"  {label}: p99 {fig[f'{key}_idle_p99_ms']:.1f} ms idle, {fig[f'{key}_during_p99_ms']:.1f} ms "
            f"from the first request to the full curves (max {fig[f'{key}_during_max_ms']:.1f} ms)"
        )


if __name__ == "__main__":
    main()
