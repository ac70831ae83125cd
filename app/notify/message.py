"""An event as a message: the versioned JSON body (the signed webhook sends it as is; its schema is in
docs/notifications.md) and a title and text for chat and e-mail (Apprise).

A run's final metrics (and a sweep's best run) are read from the runs' ``progress.json`` when the message
is made; everything else was written with the event, in the transaction that ended the run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from app.store.outbox import Event

BODY_VERSION = 1
LOG_LINES_IN_TEXT = 10
_SAFE = "+=,@:~"  # characters of run names kept as they are in links (all valid in a path)
Metrics = Callable[[str], dict[str, Any]]  # run_dir -> its final metrics ({} when unknown)


@dataclass(frozen=True)
class Message:
    title: str
    text: str
    body: dict[str, Any]


def compose(event: Event, public_url: str | None, metrics: Metrics) -> Message:
    base = public_url.rstrip("/") if public_url else None
    body: dict[str, Any] = {
        "version": BODY_VERSION,
        "id": event.id,
        "event": event.kind,
        "created_at": _iso(event.created_at),
        "run": None,
        "sweep": None,
    }
    if event.owner is None and "condition" in event.body:  # the server's own (server_events.py)
        body["server"] = _server(event.body)
        return Message(*_server_text(body["server"]), body)
    if "reservation" in event.body:  # app/lifecycle/reservations.py
        body["reservation"] = dict(event.body)
        return Message(*_reservation_text(event.body), body)
    if event.kind == "sweep_finished":
        body["sweep"] = _sweep(event.body, base, metrics)
        return Message(*_sweep_text(body["sweep"]), body)
    body["run"] = _run(event.body, base, metrics)
    return Message(*_run_text(body["run"], event.kind), body)


def probe_message(owner: str) -> Message:
    body = {"version": BODY_VERSION, "id": "test", "event": "test", "created_at": _iso(None), "run": None}
    whom = "the server's events" if owner.startswith("@") else owner
    return Message("labrun: test", f"A test notification for {whom}: this destination works.", body)


def _run(raw: dict[str, Any], base: str | None, metrics: Metrics) -> dict[str, Any]:
    started, finished = raw.get("started_at"), raw.get("finished_at")
    run = {
        "name": raw["run"],
        "owner": raw.get("owner"),
        "status": raw.get("status"),
        "reason": raw.get("reason"),
        "exit_code": raw.get("exit_code"),
        "cancelled_by": raw.get("cancelled_by"),
        "config_name": raw.get("config_name"),
        "sweep": raw.get("sweep"),
        "attempt": raw.get("attempt"),
        "started_at": _iso(started) if started else None,
        "finished_at": _iso(finished) if finished else None,
        "duration_s": round(finished - started, 3) if started and finished else None,
        "metrics": metrics(raw["run_dir"]) if raw.get("run_dir") else {},
        "log_tail": raw.get("log_tail") if raw.get("status") == "failed" else None,
        "url": f"{base}/runs/{quote(raw['run'], safe=_SAFE)}/view" if base else None,
    }
    return run


def _sweep(raw: dict[str, Any], base: str | None, metrics: Metrics) -> dict[str, Any]:
    runs = raw.get("runs") or []
    best: dict[str, Any] | None = None
    for run in runs:
        if run.get("status") != "succeeded":
            continue
        loss = metrics(run.get("run_dir") or "").get("val_loss")
        if isinstance(loss, int | float) and (best is None or loss < best["val_loss"]):
            best = {"name": run["run"], "val_loss": loss}
    return {
        "name": raw["sweep"],
        "owner": raw.get("owner"),
        "counts": raw.get("counts") or {},
        "failed": [
            {"name": r["run"], "reason": r.get("reason")} for r in runs if r.get("status") == "failed"
        ],
        "best": best,
        "url": f"{base}/#/sweeps/{quote(raw['sweep'], safe=_SAFE)}" if base else None,
    }


def _reservation_text(raw: dict[str, Any]) -> tuple[str, str]:
    gpus = ", ".join(str(g) for g in raw.get("gpus") or [])
    title = f"labrun: reservation {raw['reservation']} {raw.get('what')}"
    lines = [
        f"Reservation {raw['reservation']} of {raw.get('owner')} (GPU {gpus}, for {', '.join(raw.get('users') or [])})"
        f" {raw.get('what')}.",
        f"Window: {raw.get('start')} to {raw.get('end')}.",
    ]
    if raw.get("ended_early"):
        lines.append(f"Ended early at {raw['ended_early']}.")
    if raw.get("note"):
        lines.append(f"Note: {raw['note']}")
    return title, "\n".join(lines)


def _server(raw: dict[str, Any]) -> dict[str, Any]:
    keys = ("condition", "state", "subject", "detail", "host")
    return {key: raw.get(key) for key in keys}


_CONDITIONS = {
    "gpu_busy_outside": "GPU busy outside labrun",
    "disk_low": "output disk low",
    "engine_down": "engine down",
    "reservation_blocked": "a reserved GPU busy outside labrun",
}


def _server_text(server: dict[str, Any]) -> tuple[str, str]:
    what = _CONDITIONS.get(str(server["condition"]), str(server["condition"]))
    if server["subject"].startswith("gpu:"):
        what = what.replace("GPU", f"GPU {server['subject'][4:]}", 1)
    state = "cleared" if server["state"] == "cleared" else "started"
    title = f"labrun on {server['host']}: {what} ({state})"
    return title, f"{title}.\n{server['detail']}"


# What a run's title and first line say for the events that are not a final status.
_DONE = {
    "preempted": "was preempted",
    "resumed": "resumed",
    "time_limit_near": "is near its time limit",  # docs/time-limits.md
    "time_limit_reached": "reached its time limit",
}


def _run_text(run: dict[str, Any], kind: str = "") -> tuple[str, str]:
    done = _DONE.get(kind) or _DONE.get(str(run["status"]), str(run["status"]))
    title = f"labrun: {run['name']} {done}"
    lines = [f"Run {run['name']} of {run['owner']} {done}."]
    if run["status"] == "resumed":
        lines[0] = f"Run {run['name']} of {run['owner']} resumed as attempt {run['attempt']}."
    if run["duration_s"] is not None:
        lines.append(f"Duration: {_duration(run['duration_s'])}.")
    if run["reason"]:
        lines.append(f"{'Its last attempt was' if run['status'] == 'resumed' else 'Reason:'} {run['reason']}")
    if run["cancelled_by"] and run["status"] == "cancelled":
        lines.append(f"Cancelled by: {run['cancelled_by']}")
    if run["metrics"]:
        lines.append("Metrics: " + ", ".join(f"{k}={v}" for k, v in sorted(run["metrics"].items())))
    if run["url"]:
        lines.append(run["url"])
    if run["log_tail"]:
        tail = run["log_tail"].rstrip("\n").split("\n")[-LOG_LINES_IN_TEXT:]
        lines += ["", "Last lines of its log:", *tail]
    return title, "\n".join(lines)


def _sweep_text(sweep: dict[str, Any]) -> tuple[str, str]:
    counts = sweep["counts"]
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    title = f"labrun: sweep {sweep['name']} finished ({summary})"
    lines = [f"Sweep {sweep['name']} of {sweep['owner']} finished: {summary}."]
    if sweep["best"]:
        lines.append(f"Best run: {sweep['best']['name']} (val_loss {sweep['best']['val_loss']}).")
    for failed in sweep["failed"][:20]:
        lines.append(f"Failed: {failed['name']}: {failed['reason'] or 'no reason recorded'}")
    if sweep["url"]:
        lines.append(sweep["url"])
    return title, "\n".join(lines)


def _iso(ts: float | None) -> str:
    moment = dt.datetime.fromtimestamp(ts, dt.UTC) if ts else dt.datetime.now(dt.UTC)
    return moment.isoformat()


def _duration(seconds: float) -> str:
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m{s:02d}s" if hours else f"{m}m{s:02d}s"
