"""A run's files over HTTP (issue 28): GET /runs/{name}/archive (a tar stream) and GET /runs/{name}/files/
{path} against a real `python -m app`, beside a plain file copy of the same bytes on the same disk, and the
service's memory while it streams a big directory and a small one.

Goal: the archive's throughput of the order of a plain copy's (it reads each file once, in 1 MiB chunks, and
the client discards what it gets), and the service's memory flat: no more for a directory of hundreds of MB
than for a small one (the tar is written header by header as the walk goes; nothing is gathered).

    python bench/archive_bench.py [--quick] [--mb N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import rss_mb, service

FILE_MB = 100  # the big directory: files of this size (a checkpoint's order), plus small ones


def fill(run_dir: Path, total_mb: int) -> int:
    """A run's directory of ``total_mb`` MB in files of FILE_MB MB (and a few small files); its bytes."""
    (run_dir / "ckpt").mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)  # incompressible, repeated: writing it costs no CPU to speak of
    left, i = total_mb, 0
    while left > 0:
        size = min(FILE_MB, left)
        with open(run_dir / "ckpt" / f"epoch={i}.ckpt", "wb") as f:
            for _ in range(size):
                f.write(block)
        left -= size
        i += 1
    for name in ("metrics.csv", "run.json", "train.log"):
        (run_dir / name).write_bytes(block[:50_000])
    os.sync()
    return sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())


class RssSampler:
    """The service's RSS every 20 ms while open."""

    def __init__(self, pid: int) -> None:
        self.pid, self.values = pid, [rss_mb(pid)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.values.append(rss_mb(self.pid))
            time.sleep(0.02)


def stream(client: httpx.Client, path: str) -> tuple[int, float]:
    """GET ``path``, reading and discarding the body: (bytes, seconds). With curl where there is one (a
    client in C: httpx's own reading would be half of what is measured)."""
    curl = shutil.which("curl")
    if curl:
        t = time.perf_counter()
        out = subprocess.run(
            [curl, "-sS", "-f", "-o", "/dev/null", "-w", "%{size_download}", str(client.base_url.join(path))],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout), time.perf_counter() - t
    t = time.perf_counter()
    got = 0
    with client.stream("GET", path) as response:
        response.raise_for_status()
        for chunk in response.iter_raw(1 << 20):
            got += len(chunk)
    return got, time.perf_counter() - t


def plain_copy(src: Path, dest: Path) -> float:
    """Seconds to copy the directory's files with shutil (the same disk), the copy removed afterwards."""
    t = time.perf_counter()
    shutil.copytree(src, dest)
    took = time.perf_counter() - t
    shutil.rmtree(dest)
    return took


def plain_read(src: Path) -> float:
    """Seconds to read the directory's files in 1 MiB chunks in Python: the service's own share of an
    archive (what is left is HTTP: the server's writes and the client's reads, on the same cores here)."""
    t = time.perf_counter()
    for path in src.rglob("*"):
        if path.is_file():
            with open(path, "rb", buffering=0) as f:
                while f.read(1 << 20):
                    pass
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a 100 MB directory instead of 400 MB")
    ap.add_argument("--mb", type=int, help="the big directory's size in MB")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    big_mb = args.mb or (100 if args.quick else 400)
    fig: dict = {"big_mb": big_mb}
    with service(["true"]) as svc, httpx.Client(base_url=svc.url, timeout=600) as client:
        big, small = (client.post("/runs", json={"overrides": [f"seed={i}"]}).json() for i in (1, 2))
        big_dir, small_dir = (svc.output_dir / r["run_dir"] for r in (big, small))
        fig["big_bytes"] = fill(big_dir, big_mb)
        fig["small_bytes"] = fill(small_dir, 1)
        stream(client, f"/runs/{small['name']}/archive")  # warm: imports, the first thread-pool hop
        fig["rss_idle_mb"] = rss_mb(svc.pid)
        with RssSampler(svc.pid) as small_rss:
            got, _ = stream(client, f"/runs/{small['name']}/archive")
        fig["rss_small_max_mb"] = max(small_rss.values)
        with tempfile.TemporaryDirectory(dir=svc.output_dir) as tmp:  # the same disk as the runs
            plain_copy(big_dir, Path(tmp) / "warm")  # both read from the same (warm) page cache
            fig["copy_s"] = plain_copy(big_dir, Path(tmp) / "copy")
        fig["read_s"] = plain_read(big_dir)
        with RssSampler(svc.pid) as big_rss:
            got, fig["archive_s"] = stream(client, f"/runs/{big['name']}/archive")
        fig["archive_bytes"] = got
        assert got >= fig["big_bytes"], (got, fig["big_bytes"])
        fig["rss_big_max_mb"] = max(big_rss.values)
        one = f"/runs/{big['name']}/files/ckpt/epoch=0.ckpt"
        fig["file_bytes"], fig["file_s"] = stream(client, one)
        fig["rss_after_mb"] = rss_mb(svc.pid)
    fig["copy_mb_s"] = fig["big_bytes"] / 1e6 / fig["copy_s"]
    fig["archive_mb_s"] = fig["archive_bytes"] / 1e6 / fig["archive_s"]
    fig["read_mb_s"] = fig["big_bytes"] / 1e6 / fig["read_s"]
    fig["file_mb_s"] = fig["file_bytes"] / 1e6 / fig["file_s"]
    report(fig)
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))
    return fig


def report(fig: dict) -> None:
    print(f"\n== A run's files over HTTP ({fig['big_bytes'] / 1e6:.0f} MB directory, files of {FILE_MB} MB)")
    print(
        f"  GET /runs/{{name}}/archive: {fig['archive_mb_s']:.0f} MB/s; a plain copy of the same files on the "
        f"same disk: {fig['copy_mb_s']:.0f} MB/s (archive / copy = {fig['archive_mb_s'] / fig['copy_mb_s']:.2f})"
    )
    print(
        f"  the same files read by Python in 1 MiB chunks (the service's own share): {fig['read_mb_s']:.0f} MB/s; "
        "the rest is HTTP (server and client on the same cores here)"
    )
    print(f"  GET /runs/{{name}}/files/<one {FILE_MB} MB file>: {fig['file_mb_s']:.0f} MB/s")
    print(
        f"  service RSS: {fig['rss_idle_mb']:.0f} MB idle, {fig['rss_small_max_mb']:.0f} MB at most while it "
        f"streams a {fig['small_bytes'] / 1e6:.1f} MB directory, {fig['rss_big_max_mb']:.0f} MB at most while it "
        f"streams the {fig['big_bytes'] / 1e6:.0f} MB one, {fig['rss_after_mb']:.0f} MB after  "
        f"(target: the same for both)"
    )


if __name__ == "__main__":
    main()
