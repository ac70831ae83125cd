"""``labrun gpus ignore|ignores|unignore``: the processes the GPU guard lets be (``/gpus/ignores``).

Anyone may list the rules; adding or undoing one is an admin's (the server answers 403 to anyone else, and
this says so in words). ``labrun gpus`` without an action shows the GPU map (``cli.cmd_gpus``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from labrun import render
from labrun.client import EXIT_AUTH, EXIT_OK, Client, CliError

ADMIN_ONLY = (
    "only an admin may change what the GPU guard lets be; run this with an admin's LABRUN_TOKEN (or, on the "
    "server: python -m app gpus ...)"
)


def add_actions(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="gpus_action", metavar="ACTION")

    def action(name: str, handler: object, help: str) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help, description=help, parents=[common])
        a.set_defaults(gpus_handler=handler)
        return a

    a = action(
        "ignore",
        cmd_ignore,
        "(admin) let a process outside labrun be: it no longer keeps its GPU from labrun's runs",
    )
    which = a.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--pid", type=int, metavar="PID", help="that process only (a later process with its pid is not)"
    )
    which.add_argument(
        "--command",
        dest="pattern",
        metavar="PATTERN",
        help="every process whose command line matches, shell-style (quote it: '*jupyter*')",
    )
    a.add_argument("--note", metavar="TEXT", help="why (shown with the rule)")
    a = action("ignores", cmd_ignores, "the processes the GPU guard lets be, with their rule ids")
    a.add_argument("--json", action="store_true", help="print the server's JSON instead")
    a = action("unignore", cmd_unignore, "(admin) undo ignore rules: what they let be blocks its GPU again")
    a.add_argument("ids", nargs="+", type=int, metavar="ID", help="the rules' ids (labrun gpus ignores)")


def describe(rule: dict[str, Any]) -> str:
    what = f"pid {rule['pid']}" if rule.get("pid") is not None else f"command matching {rule['pattern']!r}"
    note = f" ({rule['note']})" if rule.get("note") else ""
    by = f", by {rule['created_by']}" if rule.get("created_by") else ""
    return render.safe(f"{what}{note}{by}")  # an admin's text: no terminal escapes through


def _admin(exc: CliError) -> CliError:
    """A 403 on an admin's action, said in words (a 401 keeps the client's own advice)."""
    if exc.exit_code == EXIT_AUTH and "HTTP 403" in exc.message:
        return CliError(f"{exc.message.split(' (HTTP 403)')[0]}: {ADMIN_ONLY}", EXIT_AUTH)
    return exc


def cmd_ignore(client: Client, args: argparse.Namespace) -> int:
    try:
        rule = client.gpu_ignore(args.pid, args.pattern, args.note)
    except CliError as exc:
        raise _admin(exc) from None
    print(rule["id"])
    print(
        f"labrun: GPU ignore rule {rule['id']}: {describe(rule)}; undo: labrun gpus unignore {rule['id']}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_ignores(client: Client, args: argparse.Namespace) -> int:
    answer = client.gpu_ignores()
    if args.json:
        print(json.dumps(answer, indent=2))
        return EXIT_OK
    if not answer["ignores"]:
        print(
            "no ignore rules: every process outside labrun above the threshold blocks its GPU",
            file=sys.stderr,
        )
    for rule in answer["ignores"]:
        print(f"{rule['id']:>4}  {describe(rule)}")
    return EXIT_OK


def cmd_unignore(client: Client, args: argparse.Namespace) -> int:
    for rule_id in args.ids:
        try:
            client.gpu_unignore(rule_id)
        except CliError as exc:
            raise _admin(exc) from None
        print(f"labrun: GPU ignore rule {rule_id} removed", file=sys.stderr)
    return EXIT_OK
