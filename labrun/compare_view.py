"""``labrun diff``'s table: runs as columns; their status and duration, then the overrides and resolved
config keys that differ, then every final metric. rich is imported when it draws (the CLI starts fast)."""

from __future__ import annotations

import json
from typing import Any

from labrun.render import console, duration, number, safe

ABSENT = "-"


def _value(value: Any, present: bool) -> str:
    if not present:
        return ABSENT
    if isinstance(value, float):
        return number(value)
    if isinstance(value, str):
        return value
    return json.dumps(value)


def comparison(answer: dict[str, Any]) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    runs = answer.get("runs", [])
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("", overflow="fold", style="bold")
    for i, _ in enumerate(runs):
        table.add_column(f"#{i + 1}", overflow="fold")

    def row(label: str, cells: list[str]) -> None:
        table.add_row(escape(safe(label)), *(escape(safe(c)) for c in cells))

    def section(title: str, found: list[dict[str, Any]], empty: str) -> None:
        table.add_section()
        table.add_row(f"[underline]{title}[/]", *[""] * len(runs))
        if not found:
            table.add_row(f"[dim]{empty}[/]", *[""] * len(runs))
        for d in found:
            row(d["key"], [_value(v, p) for v, p in zip(d["values"], d["present"], strict=False)])

    row("name", [r["run"]["name"] for r in runs])
    row("status", [r["run"]["status"] for r in runs])
    row(
        "duration",
        [duration(r.get("duration_s")) if r.get("duration_s") is not None else ABSENT for r in runs],
    )
    section("overrides that differ", answer.get("overrides", []), "none: asked the same")
    missing = [f"#{i + 1}" for i, r in enumerate(runs) if not r.get("config_found")]
    note = (
        f"none among those with a config (no .hydra/config.yaml: {', '.join(missing)})" if missing else "none"
    )
    section("resolved config that differs", answer.get("config", []), note)
    section("final metrics", answer.get("metrics", []), "none recorded")
    console().print(table)
