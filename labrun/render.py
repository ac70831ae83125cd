"""What the commands print: run tables, one run's details, the GPU map, disk usage, the live progress.

rich is imported inside the functions that draw, never at module level: ``labrun --help`` does not load it.
On a terminal, tables fit its width (long run names fold, never cut); piped, nothing is wrapped.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console

from labrun.statuses import TERMINAL

STATUS_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
}


def console(stream: TextIO | None = None) -> Console:  # rich is imported lazily: the CLI starts instantly
    from rich.console import Console

    stream = stream or sys.stdout
    tty = stream.isatty()
    return Console(file=stream, highlight=False, width=None if tty else 10_000, soft_wrap=not tty)


# --- small formats -------------------------------------------------------------------------------------


def _visible_controls() -> dict[int, str]:
    table = {c: f"^{chr(c + 64)}" for c in range(0x20) if chr(c) not in "\n\t"}  # ESC is ^[, BEL ^G
    table[0x7F] = "^?"
    table.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})  # C1: \x9b is a one-byte CSI
    return table


_VISIBLE = _visible_controls()


def safe(text: Any) -> str:
    """``text`` with its control characters shown, not obeyed: a run's log, reason or overrides are anyone's
    bytes, and an escape sequence printed raw retitles the window, clears the screen or worse. C0 (but
    newline and tab) and DEL become caret notation (ESC: ``^[``), C1 becomes ``\\x9b`` and the like."""
    return str(text).translate(_VISIBLE)


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def duration(seconds: float | None) -> str:
    """``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s < 600 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def age(run: dict[str, Any], now: dt.datetime | None = None) -> str:
    created = parse_time(run.get("created_at"))
    now = now or dt.datetime.now(dt.UTC)
    return duration((now - created).total_seconds()) if created else "-"


def elapsed(run: dict[str, Any], now: dt.datetime | None = None) -> float | None:
    """Seconds it ran (so far)."""
    started = parse_time(run.get("started_at"))
    if started is None:
        return None
    end = parse_time(run.get("finished_at")) or now or dt.datetime.now(dt.UTC)
    return (end - started).total_seconds()


def number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)
    if isinstance(value, int) or value == 0:
        return str(value)
    return f"{value:.4g}"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def gpus(run: dict[str, Any]) -> str:
    return ",".join(str(g) for g in run.get("gpus") or []) or "-"


def tagged(run: dict[str, Any]) -> str:
    """The run's name, with its class unless normal, and a preemption under way."""
    name = str(run.get("name", "?"))
    priority = run.get("priority")
    if priority and priority != "normal":
        name += f" [{priority}]"
    if run.get("status") == "running" and str(run.get("waiting_reason") or "").startswith("being preempted"):
        name += " (being preempted)"
    if run.get("status") == "queued" and run.get("after") and run.get("waiting_reason"):
        name += f" ({run['waiting_reason']})"  # what it waits for (docs/run-chains.md)
    return name


def after_text(run: dict[str, Any]) -> str | None:
    """What a run waits for, one entry each: ``run A succeeded (running)``, ``sweep S ended (ended, done)``."""
    parts = []
    for dep in run.get("after") or []:
        kind = "sweep" if dep.get("sweep") else "run"
        state = dep.get("state")
        done = " done" if dep.get("satisfied") else ""
        parts.append(f"{kind} {dep.get(kind)} {dep.get('when')}" + (f" ({state}{done})" if state else ""))
    return "; ".join(parts) or None


def owner(run: dict[str, Any]) -> str:
    return run.get("owner") or "-"


def fraction(run: dict[str, Any]) -> float | None:
    p = run.get("progress") or {}
    if isinstance(p.get("fraction"), int | float):
        return float(p["fraction"])
    if p.get("step") is not None and p.get("total"):
        return float(p["step"]) / float(p["total"])
    return None


def epoch_text(run: dict[str, Any]) -> str:
    """``epoch 2/5`` (the trainer counts from 0, and reports max_epochs once done)."""
    p = run.get("progress") or {}
    epoch, total = p.get("epoch"), p.get("max_epochs")
    if epoch is None:
        return ""
    shown = epoch + 1 if total is None else min(epoch + 1, total)
    return f"epoch {shown}/{total}" if total is not None else f"epoch {shown}"


def progress_text(run: dict[str, Any]) -> str:
    """The ``ls`` column: ``45% ep 2/5`` while running, ``#3 in queue`` while queued."""
    if run.get("status") == "queued":
        pos = run.get("queue_position")
        return f"#{pos} in queue" if pos else "queued"
    frac = fraction(run)
    if frac is None:
        return "-"
    epoch = epoch_text(run).replace("epoch ", "ep ")
    return f"{frac:.0%}" + (f" {epoch}" if epoch else "")


def start_text(run: dict[str, Any], now: dt.datetime | None = None) -> str:
    """The ``ls`` column of a queued run: ``~40 min`` (its estimated start, from now), ``?`` if unknown."""
    estimate = run.get("estimate") if run.get("status") == "queued" else None
    if not isinstance(estimate, dict):
        return "-" if run.get("status") != "queued" else "?"
    at = parse_time(estimate.get("start_at"))
    if at is None:
        return "?"
    seconds = (at - (now or dt.datetime.now(dt.UTC))).total_seconds()
    return "now" if seconds < 30 else f"~{duration(seconds)}"


def estimate_text(run: dict[str, Any]) -> str | None:
    """``labrun show``'s line: when it should start, how sure, and why it waits."""
    estimate = run.get("estimate")
    if not isinstance(estimate, dict):
        return None
    when = start_text(run)
    start = f"in {when} ({estimate.get('start_at')})" if when not in ("?", "now") else when
    if when == "?":
        start = "unknown"
    return f"{start}, {estimate.get('sure')} confidence: {estimate.get('reason')}"


def losses_text(run: dict[str, Any]) -> str:
    metrics, p = run.get("metrics") or {}, run.get("progress") or {}
    parts = []
    if p.get("step") is not None:
        parts.append(f"step {p['step']}" + (f"/{p['total']}" if p.get("total") else ""))
    for key in ("train_loss", "val_loss"):
        if metrics.get(key) is not None:
            parts.append(f"{key} {number(metrics[key])}")
    return "  ".join(parts)


# --- tables and details --------------------------------------------------------------------------------


def runs_table(runs: list[dict[str, Any]], count: int | None = None, next_before: int | None = None) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    now = dt.datetime.now(dt.UTC)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("NAME", overflow="fold", ratio=1)
    for column in ("OWNER", "STATUS", "GPUS", "PROGRESS", "START", "AGE"):
        table.add_column(column, no_wrap=True)
    table.add_column("VAL_LOSS", no_wrap=True, justify="right")
    for run in runs:
        status = run.get("status", "?")
        table.add_row(
            escape(safe(tagged(run))),
            escape(safe(owner(run))),
            f"[{STATUS_STYLE.get(status, '')}]{status}[/]"
            if status in STATUS_STYLE
            else escape(safe(status)),
            gpus(run),
            progress_text(run),
            start_text(run, now),
            age(run, now),
            number((run.get("metrics") or {}).get("val_loss")),
        )
    out = console()
    if runs:
        out.print(table)
    else:
        out.print("no runs")
    if next_before is not None:
        more = f" of {count}" if count is not None else ""
        console(sys.stderr).print(f"{len(runs)}{more} runs shown; the next page: --before {next_before}")
    elif count is not None and count > len(runs):
        console(sys.stderr).print(f"{len(runs)} of {count} runs shown (--limit)")


def stall_text(run: dict[str, Any]) -> str | None:
    """A stalled run's line: what was seen, since when, when it is cancelled (extend it to keep it)."""
    stall = run.get("stall") if run.get("stalled") else None
    if not isinstance(stall, dict):
        return None
    return (
        f"{stall.get('message')}; stalled since {stall.get('since')}, cancelled at {stall.get('cancel_at')} "
        f"unless extended (labrun extend-stall {run.get('name')})"
    )


def time_limit_text(run: dict[str, Any]) -> str:
    """``6 h (2 h 10 min left, at 18:40)``; "" without one."""
    from labrun.durations import format_duration

    limit = run.get("time_limit_s")
    if not limit:
        return ""
    text = format_duration(limit)
    at = parse_time(run.get("time_limit_at"))
    if at is not None and run.get("status") == "running":
        left = (at - dt.datetime.now(dt.UTC)).total_seconds()
        text += f" ({format_duration(max(0.0, left))} left, at {at.astimezone().strftime('%H:%M')})"
    elif run.get("ran_s"):
        text += f" (ran {format_duration(run['ran_s'])} before this attempt)"
    return text


def run_details(run: dict[str, Any]) -> None:
    from rich.markup import escape

    now = dt.datetime.now(dt.UTC)
    status = run.get("status", "?")
    rows: list[tuple[str, Any]] = [
        ("name", run.get("name")),
        ("status", f"[{STATUS_STYLE.get(status, '')}]{status}[/]" if status in STATUS_STYLE else status),
        ("owner", owner(run)),
        ("priority", run.get("priority")),
        ("attempt", run.get("attempts") if (run.get("attempts") or 1) > 1 else None),
        ("config", run.get("config_name")),
        ("overrides", " ".join(run.get("overrides") or []) or "-"),
        ("created", f"{run.get('created_at')} ({age(run, now)} ago)"),
        ("started", run.get("started_at")),
        ("finished", run.get("finished_at")),
        ("ran for", duration(elapsed(run, now)) if run.get("started_at") else None),
        ("queue position", run.get("queue_position")),
        ("waiting", run.get("waiting_reason")),
        ("after", after_text(run)),
        ("init from", run.get("init_from")),
        ("starts", estimate_text(run)),
        ("runs as", f"{run.get('runs_as')}: {run.get('runs_as_reason')}" if run.get("runs_as") else None),
        ("stalled", stall_text(run)),
        ("time limit", time_limit_text(run) or None),
        ("defaults", " ".join(run.get("default_overrides") or []) or None),
        ("gpus", gpus(run)),
        ("progress", " ".join(x for x in (progress_text(run), losses_text(run)) if x and x != "-") or None),
        ("metrics", ", ".join(f"{k} {number(v)}" for k, v in (run.get("metrics") or {}).items()) or None),
        ("exit code", run.get("exit_code")),
        ("reason", run.get("reason")),
        ("rerun of", run.get("rerun_of")),
        ("code", code_text(run)),
        ("run dir", run.get("run_dir")),
        ("disk", size(run.get("disk_bytes")) if run.get("disk_bytes") is not None else None),
        ("deleted", run.get("deleted_at")),
    ]
    resources = run.get("resources") or {}
    if resources:
        rows.append(
            (
                "estimate",
                ", ".join(f"{k} {size(v) if k.endswith('bytes') else v}" for k, v in resources.items()),
            )
        )
    out = console()
    for key, value in rows:
        if value is None or value == "":
            continue
        shown = value if key == "status" and status in STATUS_STYLE else escape(safe(value))
        out.print(f"[bold]{key:<15}[/]{shown}")
    if run.get("log_tail"):
        out.print("[bold]log tail[/]")
        out.print(escape(safe(run["log_tail"].rstrip("\n"))))


def code_text(run: dict[str, Any]) -> str | None:
    """A rerun's code against its original's (``code_differs``); nothing for a run that is no rerun."""
    if not run.get("rerun_of"):
        return None
    differs = run.get("code_differs")
    if differs is None:
        return "not known yet (compared once it has started and both run.json files say)"
    return "DIFFERS from the original's" if differs else "same as the original's"


def gpu_map(health: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Who runs what on which GPU, CPU runs, and the queue (also ``gpus --json``)."""
    on_gpu: dict[int, dict[str, Any]] = {}
    cpu, queued = [], []
    for run in runs:
        if run.get("status") == "queued":
            queued.append(run)
        elif run.get("status") == "running":
            if run.get("gpus"):
                for g in run["gpus"]:
                    on_gpu[g] = run
            else:
                cpu.append(run)
    queued.sort(key=lambda r: r.get("queue_position") or 1 << 30)

    def brief(run: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": run.get("name"),
            "owner": run.get("owner"),
            "progress": run.get("progress"),
            "gpus": run.get("gpus") or [],
            "queue_position": run.get("queue_position"),
            "waiting_reason": run.get("waiting_reason"),
            "priority": run.get("priority"),
            "status": run.get("status"),
        }

    gpu_ids = sorted(set(health.get("gpus") or []) | set(on_gpu))
    guard = health.get("gpu_guard") or {}
    outside: dict[int, list[dict[str, Any]]] = {}
    for process in guard.get("outside") or []:  # processes outside labrun on its GPUs (the GPU guard)
        outside.setdefault(process.get("gpu"), []).append(process)
    return {
        "status": health.get("status"),
        "detail": health.get("detail"),
        "gpu_guard": {"enabled": guard.get("enabled"), "detail": guard.get("detail")} if guard else None,
        "gpus": [
            {"gpu": g, "run": brief(on_gpu[g]) if g in on_gpu else None, "outside": outside.get(g, [])}
            for g in gpu_ids
        ],
        "cpu": [brief(r) for r in cpu],
        "queued": [brief(r) for r in queued],
    }


def gpus_view(view: dict[str, Any]) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    out = console()
    if view.get("status") not in (None, "ok"):
        console(sys.stderr).print(f"[red]service degraded[/]: {escape(safe(view.get('detail')))}")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("GPU", no_wrap=True, justify="right")
    table.add_column("RUN", overflow="fold", ratio=1)
    table.add_column("OWNER", no_wrap=True)
    table.add_column("PROGRESS", no_wrap=True)
    for entry in view["gpus"]:
        run = entry["run"]
        blocking = [p for p in entry.get("outside") or [] if p.get("ignored_by") is None]
        if run is None and blocking:
            for p in blocking:
                memory = "? MiB" if p.get("used_mb") is None else f"{p['used_mb']} MiB"
                table.add_row(
                    str(entry["gpu"]),
                    f"[yellow]outside labrun[/]: pid {p.get('pid')} {escape(safe(p.get('command')))}",
                    escape(safe(p.get("user"))),
                    memory,
                )
        elif run is None:
            table.add_row(str(entry["gpu"]), "[dim]free[/]", "", "")
        else:
            table.add_row(
                str(entry["gpu"]),
                escape(safe(tagged(run))),
                escape(safe(owner(run))),
                progress_text({**run, "status": "running"}),
            )
    for run in view["cpu"]:
        table.add_row(
            "cpu",
            escape(safe(tagged(run))),
            escape(safe(owner(run))),
            progress_text({**run, "status": "running"}),
        )
    if view["gpus"] or view["cpu"]:
        out.print(table)
    else:
        out.print("no GPUs, and no run running")
    if view["queued"]:
        queue = Table(
            box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title="queued", title_justify="left"
        )
        queue.add_column("#", no_wrap=True, justify="right")
        queue.add_column("RUN", overflow="fold", ratio=1)
        queue.add_column("OWNER", no_wrap=True)
        queue.add_column("WAITING", overflow="fold")
        for run in view["queued"]:
            queue.add_row(
                str(run.get("queue_position") or "-"),
                escape(safe(tagged(run))),
                escape(safe(owner(run))),
                escape(safe(run.get("waiting_reason") or "")),
            )
        out.print(queue)
    else:
        out.print("queue empty")


def budgets_view(mine: dict[str, Any]) -> None:
    """``labrun usage``'s budget section (GET /me/usage)."""
    out = console()
    for b in mine.get("budgets") or []:
        unit = "GPU-hours" if b.get("pool") == "gpu" else "CPU-hours"
        budget = "no budget" if b.get("budget_hours") is None else f"budget {b['budget_hours']:g}"
        over = "  [red]over budget: runs start as low (preemptible)[/]" if b.get("over") else ""
        out.print(
            f"{unit:<13} {b.get('used_hours', 0):.2f} used in the last {b.get('window_days', 0):g} days"
            f" ({budget}){over}"
        )


def usage_view(usage: dict[str, Any]) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    out = console()
    free, total = usage.get("free_bytes"), usage.get("total_bytes")
    out.print(
        f"runs' files   {size(usage.get('disk_bytes'))} in {usage.get('runs_measured', 0)} runs measured"
    )
    out.print(f"deleted runs  {usage.get('runs_deleted', 0)}")
    if free is not None and total:
        out.print(f"disk free     {size(free)} of {size(total)} ({free / total:.0%})")
    largest = usage.get("largest") or []
    if largest:
        table = Table(
            box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, title="largest", title_justify="left"
        )
        table.add_column("RUN", overflow="fold", ratio=1)
        table.add_column("SIZE", no_wrap=True, justify="right")
        for entry in largest:
            table.add_row(escape(safe(entry.get("name"))), size(entry.get("disk_bytes")))
        out.print(table)


# --- waiting for a run ---------------------------------------------------------------------------------


class ProgressView:
    """A live bar on a terminal (stderr); elsewhere a line whenever the status or the epoch changes."""

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self._last_line = ""
        self._progress = None
        self._task = None
        if self.stream.isatty():
            from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[info]}", markup=False),
                console=console(self.stream),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("", total=1.0, info="")

    def update(self, run: dict[str, Any]) -> None:
        status = run.get("status", "?")
        if status == "queued":
            pos = run.get("queue_position")
            info = (f"#{pos} in queue" if pos else "") + (
                f" ({run['waiting_reason']})" if run.get("waiting_reason") else ""
            )
        else:
            info = "  ".join(x for x in (epoch_text(run), losses_text(run)) if x)
        frac = fraction(run)
        if self._progress is not None and self._task is not None:
            done = frac if frac is not None else (1.0 if status == "succeeded" else 0.0)
            self._progress.update(
                self._task, description=safe(status), completed=done, info=safe(info), refresh=True
            )
            return
        if status in TERMINAL:
            return  # the outcome line says it
        line = f"{self.name}: {status}" + (
            f" {epoch_text(run)}" if status != "queued" and epoch_text(run) else ""
        )
        if line != self._last_line:
            self._last_line = line
            self.stream.write(safe(line + (f"  {info}" if info and status == "queued" else "")) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def outcome(run: dict[str, Any]) -> str:
    """The one line that ends ``--wait``: ``NAME succeeded in 3m12s (val_loss 0.0123)``, or the reason."""
    status = run.get("status")
    text = f"{run.get('name')} {status}"
    ran = elapsed(run)
    if ran is not None:
        text += f" after {duration(ran)}"
    val = (run.get("metrics") or {}).get("val_loss")
    if status == "succeeded" and val is not None:
        text += f" (val_loss {number(val)})"
    if status != "succeeded" and run.get("reason"):
        text += f": {run['reason']}"
    return safe(text)


def sweep_run_line(run: dict[str, Any], size: int) -> str:
    """``[2/6] NAME succeeded  val_loss 0.2`` (``--wait`` of a sweep prints one as each run changes)."""
    text = f"[{run['index'] + 1}/{size}] {run['name']} {run['status']}"
    if run.get("val_loss") is not None:
        text += f"  val_loss {number(run['val_loss'])}"
    if run.get("reason") and run["status"] in ("failed", "cancelled"):
        text += f"  ({run['reason']})"
    return safe(text)


def sweep_outcome(sweep: dict[str, Any]) -> str:
    """The line that ends ``labrun sweep --wait``: the counts and the best run."""
    counts = ", ".join(f"{n} {status}" for status, n in sweep["counts"].items() if n)
    best = sweep.get("best")
    tail = f"; best {best['name']} (val_loss {number(best['val_loss'])})" if best else ""
    return safe(f"{sweep['name']}: {counts}{tail}")
