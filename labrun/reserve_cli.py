"""``labrun reserve``, ``labrun reservations``, ``labrun unreserve``: GPUs booked for a window
(docs/reservations.md). The times are read here (``labrun/when.py``) and sent in RFC 3339 with an offset."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from labrun import render, when
from labrun.client import EXIT_INVALID, EXIT_OK, Client, CliError


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "reserve",
        cmd_reserve,
        "book GPUs for a window (for you, or --for some users); prints the GPUs it got",
        epilog=when.HELP,
    )
    p.add_argument("gpus", metavar="N|IDS", help="how many GPUs (4), or which ones (2,3)")
    p.add_argument("--from", dest="start", required=True, metavar="WHEN", help="the window's start")
    p.add_argument("--to", dest="end", required=True, metavar="WHEN", help="its end")
    p.add_argument("--for", dest="users", metavar="USERS", help="whose runs it is for, comma-separated")
    p.add_argument("--note", help="what it is for (shown in the list)")
    p.add_argument("--json", action="store_true", help="print the server's JSON instead (for scripts)")
    p = command(
        "reservations", cmd_reservations, "the reservations not over: GPUs, window, users, runs on them"
    )
    p.add_argument("--all", action="store_true", help="those that are over too")
    p.add_argument("--json", action="store_true", help="print the server's JSON instead (for scripts)")
    p = command("unreserve", cmd_unreserve, "end your reservation now: its GPUs are anyone's at once")
    p.add_argument("id", type=int, metavar="ID")


def _gpus(text: str) -> int | list[int]:
    try:
        if "," in text or text.startswith("["):
            return [int(g) for g in text.strip("[]").split(",") if g.strip()]
        return int(text)
    except ValueError:
        raise CliError(f"{text!r}: give a number of GPUs (4) or their ids (2,3)", EXIT_INVALID) from None


def cmd_reserve(client: Client, args: argparse.Namespace) -> int:
    try:
        start, end = when.parse(args.start), when.parse(args.end)
    except when.BadTime as exc:
        raise CliError(str(exc), EXIT_INVALID) from None
    users = [u.strip() for u in args.users.split(",") if u.strip()] if args.users else None
    made = client.reserve(_gpus(args.gpus), start.isoformat(), end.isoformat(), users, args.note)
    if args.json:
        _print_json(made)
        return EXIT_OK
    gpus = ", ".join(str(g) for g in made["gpus"])
    print(
        f"reservation {made['id']}: GPU {gpus}, {made['start']} to {made['end']} for {', '.join(made['users'])}"
    )
    return EXIT_OK


def cmd_reservations(client: Client, args: argparse.Namespace) -> int:
    found = client.reservations(args.all)
    if args.json:
        _print_json(found)
        return EXIT_OK
    rows = found.get("data", [])
    if not rows:
        print("no reservations" + ("" if args.all else " ahead (--all: those over too)"))
        return EXIT_OK
    print(f"{'ID':>4}  {'PHASE':9} {'GPUS':8} {'FROM':25} {'TO':25} {'OWNER':10} FOR / RUNS ON THEM / NOTE")
    for r in rows:
        print(render.safe(_line(r)))
    return EXIT_OK


def _line(r: dict[str, Any]) -> str:
    gpus = ",".join(str(g) for g in r["gpus"])
    extra = [", ".join(r["users"])]
    if r.get("runs"):
        extra.append("running: " + ", ".join(f"{x['run']} ({x['owner']})" for x in r["runs"]))
    if r.get("ended_at"):
        extra.append(f"ended early by {r.get('ended_by')}")
    if r.get("note"):
        extra.append(r["note"])
    return f"{r['id']:>4}  {r['phase']:9} {gpus:8} {r['start']:25} {r['end']:25} {r['owner']:10} {' / '.join(extra)}"


def cmd_unreserve(client: Client, args: argparse.Namespace) -> int:
    ended = client.end_reservation(args.id)
    print(f"reservation {ended['id']} ended: GPU {', '.join(str(g) for g in ended['gpus'])} free")
    return EXIT_OK


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
