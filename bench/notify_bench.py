"""Notifications (issue 24): from a run's end to its message at a loopback webhook receiver, and a burst of
1,000 events delivered in full while ``GET /runs/{name}`` keeps its latency.

- Latency: runs (the stand-in trainer, ~0 s) submitted one after another with ``"notify": ["succeeded"]``;
  for each, the time from the end the store recorded (``finished_at``) to the signed message's arrival.
- Burst: 1,000 events written straight into the outbox (as a 1,000-run sweep ending would leave them; a
  real one would take minutes of dispatch here), then delivered; meanwhile a client polls one run's page.
  Its p99 is compared with the same poll before the burst.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ms, pct, service

STANDIN = Path(__file__).with_name("standin_trainer.sh")


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps connections open, as most receivers do

    def do_POST(self) -> None:  # the standard library names it
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server: _Receiver = self.server  # type: ignore[assignment]
        with server.lock:
            server.arrived.setdefault(body["run"]["name"] if body.get("run") else body["id"], time.time())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _poll_times(client: httpx.Client, name: str, seconds: float) -> list[float]:
    times, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        client.get(f"/runs/{name}").raise_for_status()
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10 runs and 200 events")
    args = ap.parse_args(argv)
    runs, burst = (10, 200) if args.quick else (30, 1000)
    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"labrun+http://127.0.0.1:{receiver.server_address[1]}/hook"
    with tempfile.TemporaryDirectory() as keys:
        env = {
            "LABRUN_NOTIFY_SCHEMES": "labrun+http",
            "LABRUN_NOTIFY_ALLOW_HOSTS": "127.0.0.1",
            "LABRUN_SECRET_KEY_FILE": str(Path(keys) / "secret.key"),
            "LABRUN_MAX_CPU_RUNS": "4",
        }
        with service(["sh", str(STANDIN), str(Path(keys) / "times"), "0"], **env) as svc:
            client = httpx.Client(base_url=svc.url, timeout=30)
            client.post("/me/notify/destinations", json={"url": hook}).raise_for_status()
            lags = []
            for _ in range(runs):
                name = client.post("/runs", json={"overrides": [], "notify": ["succeeded"]}).json()["name"]
                while (run := client.get(f"/runs/{name}").json())["status"] not in ("succeeded", "failed"):
                    time.sleep(0.02)
                deadline = time.monotonic() + 30
                while name not in receiver.arrived and time.monotonic() < deadline:
                    time.sleep(0.005)
                finished = dt.datetime.fromisoformat(run["finished_at"].replace("Z", "+00:00")).timestamp()
                lags.append(receiver.arrived[name] - finished)
            before = _poll_times(client, name, 3)
            db = sqlite3.connect(svc.output_dir / ".labrun" / "runs.db", timeout=30)
            body = json.dumps({"run": "burst", "status": "failed", "owner": "local", "run_dir": ""})
            start = time.time()
            with db:
                db.executemany(
                    "INSERT INTO events (kind, subject, owner, created_at, body) VALUES ('failed', ?, 'local', ?, ?)",
                    [(f"burst-{i}", start, body.replace('"burst"', f'"burst-{i}"')) for i in range(burst)],
                )
            db.close()
            during = _poll_times(client, name, 0.5)
            while sum(k.startswith("burst-") for k in list(receiver.arrived)) < burst:
                during += _poll_times(client, name, 0.2)
                if time.time() - start > 300:
                    break
            delivered = sum(k.startswith("burst-") for k in list(receiver.arrived))
            took = max(v for k, v in receiver.arrived.items() if k.startswith("burst-")) - start
            client.close()
    receiver.shutdown()
    result = {
        "end_to_message_p50_s": pct(lags, 50),
        "end_to_message_p99_s": pct(lags, 99),
        "burst_events": burst,
        "burst_delivered": delivered,
        "burst_s": took,
        "get_run_p99_before_ms": pct(before, 99) * 1000,
        "get_run_p99_during_ms": pct(during, 99) * 1000,
    }
    print("notifications")
    print(
        f"  run end -> message at a loopback webhook: p50 {ms(result['end_to_message_p50_s'])}, "
        f"p99 {ms(result['end_to_message_p99_s'])} ({runs} runs)"
    )
    print(f"  burst of {burst} events: {delivered} delivered in {took:.1f} s")
    print(
        f"  GET /runs/<name> p99: {result['get_run_p99_before_ms']:.1f} ms before, "
        f"{result['get_run_p99_during_ms']:.1f} ms during the burst"
    )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
