"""Slow clients against a real `python -m app`: many idle connections, and as many sending a request head or
body one byte a second, all at once. Measured: how long until the service closes each (bound:
LABRUN_REQUEST_READ_TIMEOUT_S, app/serving.py), how /healthz answers meanwhile, the service's memory; and,
for comparison, how many are still open past the bound when the bound is set out of reach (an hour).

    python bench/slow_clients_bench.py [--quick] [--connections N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import pct, rss_mb, service

# Longer than any watch below at one byte a second: without a bound, none of them would ever complete.
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: labrun\r\nX-Slow: " + b"x" * 200 + b"\r\n\r\n"
BODY = b'{"overrides": [' + b" " * 200 + b'"model=fno"]}'
POST_HEAD = (
    b"POST /runs HTTP/1.1\r\nHost: labrun\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
)
KINDS = {  # kind: (sent at once, then one byte a second)
    "idle (nothing sent)": (b"", b""),
    "head, one byte a second": (b"", SLOW_HEAD),
    "body, one byte a second": (POST_HEAD % len(BODY), BODY),
}


@dataclass
class Conn:
    kind: str
    sock: socket.socket
    trickle: bytes
    opened: float = field(default_factory=time.monotonic)
    closed_after: float | None = None
    answered: bool = False


def open_conns(port: int, per_kind: int) -> list[Conn]:
    conns = []
    for kind, (first, trickle) in KINDS.items():
        for _ in range(per_kind):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            if first:
                sock.sendall(first)
            sock.setblocking(False)
            conns.append(Conn(kind, sock, trickle))
    return conns


def watch(conns: list[Conn], limit_s: float) -> None:
    """One byte a second to every trickling connection; a read of b"" (or a reset) is the server's close."""
    sel = selectors.DefaultSelector()  # epoll: select() stops at 1024 descriptors
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
    deadline = time.monotonic() + limit_s
    next_byte = time.monotonic()
    while sel.get_map() and time.monotonic() < deadline:
        if time.monotonic() >= next_byte:
            next_byte += 1.0
            _trickle(sel)
        for key, _ in sel.select(timeout=max(0.0, min(next_byte, deadline) - time.monotonic())):
            _receive(sel, key.data)
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.data.sock.close()


def _trickle(sel: selectors.BaseSelector) -> None:
    """The next byte of each trickling connection's request."""
    for key in list(sel.get_map().values()):
        c = key.data
        if c.trickle:
            try:
                c.sock.send(c.trickle[:1])
                c.trickle = c.trickle[1:]
            except OSError:
                _closed(sel, c)


def _receive(sel: selectors.BaseSelector, c: Conn) -> None:
    """What the server sent: an answer, or (b"", a reset) its close."""
    try:
        data = c.sock.recv(65536)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    c.answered = c.answered or bool(data)
    if not data:
        _closed(sel, c)


def _closed(sel: selectors.BaseSelector, c: Conn) -> None:
    c.closed_after = time.monotonic() - c.opened
    sel.unregister(c.sock)
    c.sock.close()


def probe(url: str, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    """/healthz every 50 ms while the slow connections hang on."""
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                client.get("/healthz").raise_for_status()
                latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            stop.wait(0.05)


def measure(per_kind: int, bound_s: float, watch_s: float) -> dict[str, Any]:
    with service(LABRUN_REQUEST_READ_TIMEOUT_S=str(bound_s)) as svc:
        port = int(svc.url.rsplit(":", 1)[1])
        rss_before = rss_mb(svc.pid)
        conns = open_conns(port, per_kind)
        latencies: list[float] = []
        failures: list[str] = []
        stop = threading.Event()
        prober = threading.Thread(target=probe, args=(svc.url, stop, latencies, failures))
        prober.start()
        watcher = threading.Thread(target=watch, args=(conns, watch_s))
        watcher.start()
        time.sleep(min(1.0, bound_s / 2))
        rss_open = rss_mb(svc.pid)  # every connection open (none can be closed before the bound)
        watcher.join()
        stop.set()
        prober.join()
        runs = httpx.get(svc.url + "/runs").json()["count"]
    kinds = {}
    for kind in KINDS:
        mine = [c for c in conns if c.kind == kind]
        closed = [c.closed_after for c in mine if c.closed_after is not None]
        kinds[kind] = {
            "connections": len(mine),
            "closed": len(closed),
            "still_open": len(mine) - len(closed),
            "answered": sum(c.answered for c in mine),
            "closed_after_s": {"min": min(closed), "p50": pct(closed, 50), "max": max(closed)}
            if closed
            else None,
        }
    return {
        "bound_s": bound_s,
        "watched_s": watch_s,
        "kinds": kinds,
        "healthz_meanwhile": {
            "requests": len(latencies),
            "failures": len(failures),
            "p50_ms": 1000 * pct(latencies, 50),
            "p99_ms": 1000 * pct(latencies, 99),
            "max_ms": 1000 * max(latencies, default=float("nan")),
        },
        "service_rss_mb": {"before": rss_before, "all_open": rss_open},
        "runs_created": runs,
    }


def report(title: str, r: dict[str, Any]) -> None:
    print(f"{title} (LABRUN_REQUEST_READ_TIMEOUT_S={r['bound_s']:g}, watched {r['watched_s']:g} s):")
    for kind, k in r["kinds"].items():
        after = k["closed_after_s"]
        when = (
            f", closed after {after['min']:.2f}-{after['max']:.2f} s (p50 {after['p50']:.2f})"
            if after
            else ""
        )
        print(f"  {k['connections']} {kind}: {k['closed']} closed, {k['still_open']} still open{when}")
    h = r["healthz_meanwhile"]
    print(
        f"  /healthz meanwhile: {h['requests']} answered, {h['failures']} failed, "
        f"p50 {h['p50_ms']:.1f} ms, p99 {h['p99_ms']:.1f} ms, max {h['max_ms']:.1f} ms"
    )
    m = r["service_rss_mb"]
    print(
        f"  service RSS {m['before']:.0f} MB before, {m['all_open']:.0f} MB with all open; runs created: {r['runs_created']}"
    )


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="100 of each, a 2 s bound")
    ap.add_argument("--connections", type=int, help="connections of each kind (default 500, quick 100)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    per_kind = args.connections or (100 if args.quick else 500)
    bound = 2.0 if args.quick else 10.0  # 10 s: the service's default
    print(f"Slow clients: {per_kind} connections of each kind at once, on one service")
    figures = {"bounded": measure(per_kind, bound, bound + 5)}
    report("  with the bound", figures["bounded"])
    figures["unbounded"] = measure(per_kind, 3600.0, bound + 5)
    report("  bound out of reach (as before app/serving.py)", figures["unbounded"])
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
